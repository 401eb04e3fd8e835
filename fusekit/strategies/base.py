"""The stages every strategy provides to the one pipeline (``fusekit.api.run``).

The pipeline owns what all strategies share — the atomic output folder, checkpoints
and resume, the accelerate relaunch, numerical guards, evaluation labels,
provenance and the model card — so a strategy supplies only its science:

* ``plan()``: what it will do, from configs alone (``--dry-run``); reads no weights.
* ``prepare(workdir)``: once, in the parent process: resolve the models (training
  from-scratch parents), do any surgery into ``workdir``, and say which inputs the
  output depends on.  What it returns must be JSON, because under
  ``--accelerate-config`` every rank rebuilds its model from it.
* ``units(prepared)``: the models to train, main one first (CALM adds its baselines).
* ``build(prepared, unit)``: in every rank, the model, data and loss of one unit.
* ``save(built, unit, workdir)``: on rank 0, write the trained unit into the output.
* ``evaluate(built, unit, workdir, name)`` and ``report(prepared, scores)``: the scores
  and the tables of the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from fusekit.recipe.common import own_load
from fusekit.result import StageResult, TrainingRecord
from fusekit.stages import Built, ModelInput, Prepared

__all__ = ["Built", "ModelInput", "Prepared", "Strategy", "model_input", "model_inputs"]


class Strategy(ABC):
    """Base class; subclasses set ``tag`` and implement ``plan``, ``prepare`` and ``build``."""

    tag: ClassVar[str]
    #: The unit name of the model the output holds.
    main_unit: ClassVar[str] = "model"

    def __init__(self, recipe: Any) -> None:
        self.recipe = recipe

    # ------------------------------------------------------------------ planning

    @abstractmethod
    def plan(self) -> dict[str, Any]:
        """What will be built: layers, parameter counts, memory/disk estimates. Reads no weights."""

    def input_paths(self) -> list[Path]:
        """Local folders this strategy reads; the output may never be inside one of them."""
        return []

    # ------------------------------------------------------------------ stages

    @abstractmethod
    def prepare(self, workdir: Path) -> Prepared:
        """Resolve inputs and do parent-only work (surgery) into ``workdir``."""

    def needs_tokenizer(self) -> bool:
        """Whether every input folder must carry a tokenizer (training and scoring do)."""
        return True

    def has_training(self) -> bool:
        spec = getattr(self.recipe, "train", None)
        return spec is not None and spec.steps != 0

    def units(self, prepared: Prepared) -> list[str]:
        """The units to build and fit, main first; none when nothing trains."""
        return [self.main_unit] if self.has_training() else []

    def build(self, prepared: Prepared, unit: str) -> Built:
        """Model, data and loss of ``unit``; called in every rank."""
        raise NotImplementedError(f"{self.tag} trains nothing, so it builds no unit")

    def save(self, built: Built, unit: str, workdir: Path) -> None:
        """Write the trained main unit as a standard HF folder (the default for models)."""
        from fusekit.io.saving import save_trained

        save_trained(built.model, built.tokenizer, workdir, dtype=built.save_dtype)

    def evaluate(self, built: Built | None, unit: str, workdir: Path, name: str) -> dict[str, Any]:
        """Scores of ``unit``; the default scores the saved output on the recipe's eval sets,
        labelled ``name`` (the output's name, not the temporary folder's)."""
        if unit != self.main_unit or not self.recipe.eval_data():
            return {}
        from fusekit.evaluation.sets import evaluate_sets

        return {"evaluation": evaluate_sets(workdir, self.recipe.eval_data(), name=name)}

    def report(
        self,
        prepared: Prepared,
        records: dict[str, TrainingRecord | None],
        scores: dict[str, dict[str, Any]],
        details: dict[str, Any],
    ) -> StageResult:
        """The run's result from the units' training records and scores."""
        main = scores.get(self.main_unit, {})
        return StageResult(
            training=records.get(self.main_unit),
            baselines={k: v for k, v in records.items() if k != self.main_unit and v},
            evaluation=main.get("evaluation", []),
            details=details,
        )


def _input(ref: Any, path: Path) -> ModelInput:
    """The folder every stage loads: with ``allow_pickle``, a pickled checkpoint's
    safetensors copy (converted once), so surgery and loaders read one format."""
    allow_pickle = bool(getattr(ref, "allow_pickle", False))
    if allow_pickle:
        from fusekit.io.convert import safetensors_folder

        path = safetensors_folder(path)
    return ModelInput(
        path=str(path),
        allow_pickle=allow_pickle,
        trust_remote_code=bool(getattr(ref, "trust_remote_code", False)),
        load=own_load(ref),
    )


def model_input(ref: Any) -> ModelInput:
    """A recipe's model reference as a local folder (from-scratch models trained and cached)."""
    from fusekit.sources import resolve_model

    return _input(ref, resolve_model(ref))


def model_inputs(refs: list[Any]) -> list[ModelInput]:
    """``model_input`` for several references; missing from-scratch parents train side by side."""
    from fusekit.sources import resolve_models

    return [_input(ref, path) for ref, path in zip(refs, resolve_models(refs), strict=True)]

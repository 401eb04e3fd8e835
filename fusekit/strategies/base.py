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
from typing import Any, ClassVar, Generic, TypeVar

from fusekit.evaluation.sets import evaluate_sets
from fusekit.io.saving import save_trained
from fusekit.recipe.common import BaseRecipe
from fusekit.result import StageResult, TrainingRecord
from fusekit.units import Built, ModelInput, Prepared

__all__ = ["Built", "ModelInput", "Prepared", "Strategy"]

R = TypeVar("R", bound=BaseRecipe)


class Strategy(ABC, Generic[R]):
    """Base class, generic over the strategy's recipe model (``Strategy[CalmRecipe]``);
    subclasses set ``tag`` and implement ``plan``, ``prepare`` and ``build``."""

    tag: ClassVar[str]
    #: The unit name of the model the output holds.
    main_unit: ClassVar[str] = "model"
    #: Whether its training data may hold conversations (``fusekit.data.chat``).
    takes_conversations: ClassVar[bool] = True
    #: Whether it can train on a stream (``train.streaming``, ``fusekit.data.streamed``).
    takes_streaming: ClassVar[bool] = False

    def __init__(self, recipe: R) -> None:
        self.recipe: R = recipe

    # ------------------------------------------------------------------ planning

    @abstractmethod
    def plan(self) -> dict[str, Any]:
        """What will be built: layers, parameter counts, memory/disk estimates. Reads no weights."""

    # ------------------------------------------------------------------ stages

    @abstractmethod
    def prepare(self, workdir: Path) -> Prepared:
        """Resolve inputs and do parent-only work (surgery) into ``workdir``."""

    def needs_tokenizer(self) -> bool:
        """Whether every input folder must carry a tokenizer (training and scoring do)."""
        return True

    def has_training(self) -> bool:
        spec = self.recipe.train
        return spec is not None and spec.steps != 0

    def units(self, prepared: Prepared) -> list[str]:
        """The units to build and fit, main first; none when nothing trains."""
        return [self.main_unit] if self.has_training() else []

    def build(self, prepared: Prepared, unit: str) -> Built:
        """Model, data and loss of ``unit``; called in every rank."""
        raise NotImplementedError(f"{self.tag} trains nothing, so it builds no unit")

    def save(self, built: Built, unit: str, workdir: Path) -> None:
        """Write the trained main unit as a standard HF folder (the default for models)."""

        save_trained(built.model, built.tokenizer, workdir, dtype=built.save_dtype)

    def evaluate(self, built: Built | None, unit: str, workdir: Path, name: str) -> dict[str, Any]:
        """Scores of ``unit``; the default scores the saved output on the recipe's eval sets,
        labelled ``name`` (the output's name, not the temporary folder's)."""
        if unit != self.main_unit or not self.recipe.eval_data():
            return {}

        train = self.recipe.train
        template = train.chat_template if train is not None else None
        return {
            "evaluation": evaluate_sets(
                workdir, self.recipe.eval_data(), name=name, chat_template=template
            )
        }

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

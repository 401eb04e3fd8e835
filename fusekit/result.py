"""The typed records a run produces: what ``fusekit.api.run`` returns and ``fusekit.json`` holds.

Every strategy's output has the same top-level shape (recipe, plan, inputs with
hashes, training record, evaluation, versions), so the CLI, ``compare`` and users
read one structure instead of strategy-specific dict keys.  Strategy-specific
facts (a layer map, alignment statistics, CALM's probe) live under ``details``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputRecord(_Record):
    """One input (a model folder or a data file) with the content hash that identifies it."""

    path: str
    hash: str
    converted_from: dict[str, Any] | None = Field(
        None, description="the GGUF file this folder was dequantised from, with its sha256"
    )


class TrainingRecord(_Record):
    """What one ``fit`` did: steps, losses, what trained, where it resumed, on how many ranks."""

    trained: bool = False
    steps: int = 0
    final_loss: float | None = None
    mean_loss: float | None = None
    loss_curve: list[tuple[int, float]] = Field(default_factory=list)
    eval_curve: list[dict[str, float]] = Field(
        default_factory=list,
        description="train.eval_steps: held-out scores by step, [{step, <set>: score, …}]",
    )
    seconds: float = 0.0
    examples: int = Field(
        0, description="training examples; 0 for a stream, whose length is unknown"
    )
    trainable_parameters: int | None = None
    total_parameters: int | None = None
    trainable_share: float | None = None
    resumed_from_step: int | None = Field(
        None, description="the checkpoint step training continued from; None = from step 0"
    )
    steps_run: int = Field(0, description="optimizer steps this process ran (fewer after a resume)")
    world_size: int = 1
    skipped_nonfinite_steps: int = 0
    extra: dict[str, Any] = Field(default_factory=dict, description="the loss's own statistics")


class StageResult(_Record):
    """What the build -> fit -> save -> evaluate stages return (in-process or from rank 0)."""

    training: TrainingRecord | None = None
    baselines: dict[str, TrainingRecord] = Field(default_factory=dict)
    evaluation: list[dict[str, Any]] = Field(default_factory=list)
    tables: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RunResult(StageResult):
    """The result of ``fusekit.api.run``; ``fusekit.json`` is this record plus creation time."""

    output: str
    strategy: str
    recipe: dict[str, Any]
    plan: dict[str, Any]
    inputs: dict[str, InputRecord]
    data: dict[str, InputRecord] = Field(default_factory=dict)
    curve_data: dict[str, InputRecord] = Field(
        default_factory=dict,
        description="the evaluation files training.eval_curve was scored on (train.eval_steps)",
    )
    versions: dict[str, str]
    seconds: float = 0.0

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access (``result["training"]``) for scripts written against dicts."""
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

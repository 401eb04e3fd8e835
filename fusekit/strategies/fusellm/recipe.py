"""The ``fusellm`` recipe: continual training on fused source distributions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fusekit.recipe.common import BaseRecipe, ModelRef, TrainSpec


class FuseLLMRecipe(BaseRecipe):
    """FuseLLM: continual training of a target on fused source distributions."""

    strategy: Literal["fusellm"]
    target: ModelRef
    sources: list[ModelRef] = Field(min_length=1)
    lam: float = Field(
        0.9, ge=0.0, le=1.0, alias="lambda", description="weight of the CLM loss (paper: 0.9)"
    )
    top_k: int = Field(10, ge=1, description="candidates kept per position per source")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the fused target")
    fusion: Literal["mince", "avgce"] = Field(
        "mince", description="pick the lowest-CE source, or CE-weighted average"
    )
    align: Literal["mined", "em", "offsets"] = Field(
        "offsets",
        description="offsets: exact alignment from character offsets; mined/em: the "
        "reference's DTW with MinED or exact-match vocabulary mapping",
    )
    mode: Literal["online", "offline"] = Field(
        "online", description="online: sources run inside training; offline: extract first"
    )
    source_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="dtype the sources run in, without gradients: auto follows "
        "train.precision; bf16 keeps the target in fp32 and halves the sources' memory and, "
        "on hardware with bf16 matrix units (AMX, tensor cores), most of their time, at a "
        "small change to the fused target",
    )
    reference_fallback: bool = Field(
        False, description="reproduce the released code's one-hot on the current token"
    )
    train: TrainSpec

    def source_dtype(self) -> str:
        """The sources' dtype as resolved: ``source_precision``, or the training's for auto."""
        if self.source_precision != "auto":
            return self.source_precision
        return "bf16" if self.train.precision == "bf16" else "fp32"

    @model_validator(mode="after")
    def _has_data(self) -> FuseLLMRecipe:
        if self.train_data() is None:
            raise ValueError("fusellm needs a training corpus: train.data or data.train")
        return self

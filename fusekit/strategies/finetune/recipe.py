"""The ``finetune`` recipe: the plain continued-training baseline (full or LoRA)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fusekit.recipe.common import BaseRecipe, ModelRef, Strict, TrainSpec


class LoraSpec(Strict):
    """LoRA adapters (peft), merged into the weights when training ends."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = Field(
        "all-linear", description="module names, or 'all-linear' (peft's shorthand)"
    )

    def peft_kwargs(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": self.target_modules,
        }


class FinetuneRecipe(BaseRecipe):
    """Plain continued training (full, or LoRA with ``lora:``): the baseline for every fusion."""

    strategy: Literal["finetune"]
    model: ModelRef
    lora: LoraSpec | None = None
    train: TrainSpec

    @model_validator(mode="after")
    def _has_data(self) -> FinetuneRecipe:
        if self.train_data() is None:
            raise ValueError("finetune needs training data: train.data or data.train")
        return self

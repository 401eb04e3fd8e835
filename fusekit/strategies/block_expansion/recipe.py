"""The ``block_expansion`` recipe (LLaMA Pro)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fusekit.recipe.common import ModelRef, SurgeryRecipe
from fusekit.recipe.options import surgery_training

#: Zeroed post-norm gains move about lr per Adam step; at LLaMA Pro's 2e-4 they stay
#: near zero for hundreds of steps and hold every other weight of the copy still.
GAIN_LR_SCALE = 100.0


class BlockExpansionRecipe(SurgeryRecipe):
    """LLaMA Pro block expansion: ``groups`` (N) × ``blocks_per_group`` (P), or ``positions``."""

    strategy: Literal["block_expansion"]
    model: ModelRef
    groups: int | None = Field(None, ge=1)
    blocks_per_group: int = Field(1, ge=1)
    positions: list[int] | None = Field(
        None, description="insert a copy after each of these original layers (0-based)"
    )
    zero: Literal["auto", "output_proj", "post_norm"] = Field(
        "auto",
        description="how copies become identities: auto = post-norm gains on post-norm "
        "architectures (Gemma 2/3, OLMo 2), output projections otherwise",
    )
    gain_lr_scale: float = Field(
        GAIN_LR_SCALE,
        gt=0,
        description="with zero: post_norm, the zeroed gains train at this multiple of "
        "train.lr (a zero gain also zeroes the gradient of every other weight of its copy)",
    )
    trainable: Literal["new", "all"] = Field(
        "new", description="train only the inserted blocks (LLaMA Pro) or the whole model"
    )

    @model_validator(mode="after")
    def _one_form(self) -> BlockExpansionRecipe:
        if (self.groups is None) == (self.positions is None):
            raise ValueError("give exactly one of groups (with blocks_per_group) or positions")
        return self


def from_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``fusekit fuse --strategy block_expansion``: trains only when given ``--data``."""
    recipe: dict[str, Any] = {
        "strategy": "block_expansion", "model": opts["model"], "groups": opts["groups"],
    }  # fmt: skip
    if opts["blocks_per_group"] is not None:
        recipe["blocks_per_group"] = opts["blocks_per_group"]
    return surgery_training(recipe, opts, "block_expansion")

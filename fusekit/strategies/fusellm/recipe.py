"""The ``fusellm`` recipe: continual training on fused source distributions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fusekit.recipe.common import BaseRecipe, LoadSpec, ModelRef, TrainSpec, resolve_load
from fusekit.recipe.options import train_section


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
        description="dtype the sources run in, without gradients: auto follows load.dtype, "
        "else train.precision; bf16 keeps the target in fp32 and halves the sources' memory "
        "and, on hardware with bf16 matrix units (AMX, tensor cores), most of their time, at "
        "a small change to the fused target; a source's own load.dtype wins",
    )
    source_chat_templates: list[str | None] | None = Field(
        None,
        description="the chat template each source reads conversations in, one per source "
        "(a file or the template; null: the source tokenizer's own, or the target's when the "
        "source is the target)",
    )
    reference_fallback: bool = Field(
        False, description="reproduce the released code's one-hot on the current token"
    )
    train: TrainSpec

    def chat_templates(self) -> dict[str, str]:
        """The target's template and each source's (``BaseRecipe.chat_templates``)."""
        sources = self.source_chat_templates or []
        named = {f"source_chat_template_{i}": t for i, t in enumerate(sources) if t}
        return {**super().chat_templates(), **named}

    def source_load(self, own: LoadSpec | None = None) -> LoadSpec:
        """A source's load settings, most specific first: its own ``load:``, then
        ``source_precision`` (unless auto), the recipe's ``load:``, the training precision.

        ``source_precision`` is the older knob for the sources alone, so it stays more
        specific than the recipe-wide ``load.dtype`` (which also sets the target's).
        """
        precision = (
            None if self.source_precision == "auto" else LoadSpec(dtype=self.source_precision)
        )
        return resolve_load(own, precision, self.load, dtype=self.frozen_dtype())

    def source_dtype(self) -> str:
        """The dtype of a source that sets none of its own (``source_load``)."""
        return str(self.source_load().dtype)

    @model_validator(mode="after")
    def _has_data(self) -> FuseLLMRecipe:
        if self.train_data() is None:
            raise ValueError("fusellm needs a training corpus: train.data or data.train")
        templates = self.source_chat_templates
        if templates is not None and len(templates) != len(self.sources):
            raise ValueError(
                f"source_chat_templates has {len(templates)} entries for {len(self.sources)} "
                "sources; give one per source (null for a source's own template)"
            )
        return self


def from_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``fusekit fuse --strategy fusellm``: ``--source`` repeats; ``--data`` is ``train.data``."""
    recipe: dict[str, Any] = {
        "strategy": "fusellm", "target": opts["target"], "sources": list(opts["source"] or []),
    }  # fmt: skip
    for key in ("fusion", "align"):
        if opts[key] is not None:
            recipe[key] = opts[key]
    if opts["lam"] is not None:
        recipe["lambda"] = opts["lam"]
    recipe["train"] = train_section(opts, data=True, default_steps=1000)
    return recipe

"""The ``calm`` recipe: frozen anchor + augments, trained cross-attention."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from fusekit.recipe.common import BaseRecipe, DataRef, DataSpec, ModelRef, TrainSpec
from fusekit.recipe.options import train_section


def _embed_is_minus_one(value: Any) -> Any:
    """``embed`` names the embedding output, which the library numbers -1."""
    if isinstance(value, str) and value.strip().lower() in {"embed", "embedding", "embeddings"}:
        return -1
    return value


Layer = Annotated[int, BeforeValidator(_embed_is_minus_one), Field(ge=-1)]
LayerPair = tuple[Layer, Layer]


class CalmRecipe(BaseRecipe):
    """CALM: frozen anchor + augmenting models, trained cross-attention between them."""

    strategy: Literal["calm"]
    anchor: ModelRef
    augment: list[ModelRef] = Field(min_length=1)
    every: int = Field(4, ge=1, description="pair every k-th augment layer")
    pairs: list[list[LayerPair]] | None = Field(
        None, description="per augment model, (augment_layer, anchor_layer) pairs"
    )
    heads: int | None = Field(None, ge=1, description="cross-attention heads; default: anchor's")
    mask: Literal["causal", "diagonal"] = Field(
        "causal",
        description=(
            "causal: anchor t reads augment positions ending no later than t; diagonal: only "
            "the latest of them (t itself with a shared tokenizer)"
        ),
    )
    augment_mode: Literal["iterative", "encoder"] = Field(
        "iterative", description="encoder = augment run once on the prompt (paper's ablation)"
    )
    anchor_mix: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of the anchor's own domain mixed into D_C: of examples for a "
        "from-scratch anchor's task, of characters for anchor_data",
    )
    anchor_data: DataRef | None = Field(
        None,
        description="what anchor_mix draws from for a pretrained anchor: text or examples "
        "of the anchor's own domain (a from-scratch anchor's task is used otherwise)",
    )
    kv_norm: bool = Field(False, description="RMSNorm the augment states before the projection")
    scale_output: bool = Field(
        False, description="scale each pair's update by the RMS of the anchor stream it joins"
    )
    null_key: bool = Field(
        False, description="a learnt key with a zero value, so a pair can add nothing"
    )
    baselines: list[Literal["lora", "random_augment", "encoder"]] = Field(
        default_factory=list, description="extra models trained on the same D_C for comparison"
    )
    data: DataSpec
    train: TrainSpec

    @field_validator("augment", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]

    @model_validator(mode="after")
    def _pairs_per_augment(self) -> CalmRecipe:
        if self.pairs is not None and len(self.pairs) != len(self.augment):
            raise ValueError(
                f"pairs has {len(self.pairs)} lists but there are {len(self.augment)} augment "
                "models; give one list of (augment_layer, anchor_layer) pairs per augment model"
            )
        if self.train_data() is None:
            raise ValueError("calm needs training data: data.train (the composition set D_C)")
        if self.anchor_data is not None and self.anchor_mix <= 0:
            raise ValueError("anchor_data is only read with anchor_mix > 0; set both or neither")
        return self

    def shaping_data(self) -> list[DataRef]:
        return [*super().shaping_data(), *([self.anchor_data] if self.anchor_data else [])]


def from_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``fusekit fuse --strategy calm``: ``--data`` is the composition's training set."""
    recipe: dict[str, Any] = {
        "strategy": "calm", "anchor": opts["anchor"], "augment": list(opts["augment"] or []),
    }  # fmt: skip
    if opts["every"] is not None:
        recipe["every"] = opts["every"]
    recipe["data"] = {"train": opts["data"]} if opts["data"] else {}
    recipe["train"] = train_section(opts, data=False, default_steps=1000)
    return recipe

"""One recipe model per strategy; ``Recipe`` is their union, discriminated on ``strategy``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from fusekit.recipe.common import BaseRecipe, DataSpec, ModelRef, Strict, TrainSpec, parse_size


class SliceSource(Strict):
    """One source of a mergekit-style slice: ``{model: DIR, layer_range: [start, end]}``."""

    model: ModelRef | None = None
    layer_range: tuple[int, int]

    @field_validator("layer_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if start < 0 or end <= start:
            raise ValueError(
                f"layer_range {list(value)} must be [start, end) with 0 <= start < end"
            )
        return value


_SHORT_SLICE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def _short_slice(value: Any) -> Any:
    """Accept ``"0:24"`` as shorthand for ``{sources: [{layer_range: [0, 24]}]}``."""
    if isinstance(value, str):
        match = _SHORT_SLICE.match(value)
        if not match:
            raise ValueError(f"slice {value!r} is not like '0:24'")
        return {"sources": [{"layer_range": [int(match.group(1)), int(match.group(2))]}]}
    return value


class Slice(Strict):
    """A mergekit ``passthrough`` slice; fusekit takes exactly one source per slice."""

    sources: list[SliceSource] = Field(min_length=1)

    @field_validator("sources")
    @classmethod
    def _one_source(cls, value: list[SliceSource]) -> list[SliceSource]:
        if len(value) != 1:
            raise ValueError(
                "a passthrough slice takes exactly one source; several sources mean a merge, "
                "which depth up-scaling does not do"
            )
        return value


class _StructuralRecipe(BaseRecipe):
    shard_size: str = "2GB"

    @field_validator("shard_size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value


class DepthUpscalingRecipe(_StructuralRecipe):
    """SOLAR depth up-scaling: ``remove: m`` or mergekit-style ``slices``."""

    strategy: Literal["depth_upscaling"]
    model: ModelRef | None = None
    remove: int | None = Field(None, ge=1, description="SOLAR's m: layers dropped at the seam")
    slices: list[Annotated[Slice, BeforeValidator(_short_slice)]] | None = None
    merge_method: Literal["passthrough"] | None = Field(
        None, description="accepted so mergekit passthrough configs load unchanged"
    )
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="cast the output's weights; default keeps the source dtype"
    )

    @model_validator(mode="after")
    def _one_form(self) -> DepthUpscalingRecipe:
        if (self.remove is None) == (self.slices is None):
            raise ValueError("give exactly one of remove (SOLAR's m) or slices")
        if self.remove is not None and self.model is None:
            raise ValueError("remove needs model: the folder to up-scale")
        if self.slices is not None and self.model is None:
            for i, sl in enumerate(self.slices):
                if sl.sources[0].model is None:
                    raise ValueError(f"slices[{i}] names no model and there is no top-level model")
        return self


class BlockExpansionRecipe(_StructuralRecipe):
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
    trainable: Literal["new", "all"] = Field(
        "new", description="train only the inserted blocks (LLaMA Pro) or the whole model"
    )

    @model_validator(mode="after")
    def _one_form(self) -> BlockExpansionRecipe:
        if (self.groups is None) == (self.positions is None):
            raise ValueError("give exactly one of groups (with blocks_per_group) or positions")
        return self


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
        description="causal: anchor t reads augment <= t; diagonal: only t (same tokenizer)",
    )
    augment_mode: Literal["iterative", "encoder"] = Field(
        "iterative", description="encoder = augment run once on the prompt (paper's ablation)"
    )
    anchor_mix: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of anchor-task examples mixed into D_C"
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
        return self


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
    reference_fallback: bool = Field(
        False, description="reproduce the released code's one-hot on the current token"
    )
    train: TrainSpec

    @model_validator(mode="after")
    def _has_data(self) -> FuseLLMRecipe:
        if self.train_data() is None:
            raise ValueError("fusellm needs a training corpus: train.data or data.train")
        return self


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


STRATEGY_RECIPES: dict[str, type[BaseRecipe]] = {
    "finetune": FinetuneRecipe,
    "calm": CalmRecipe,
    "fusellm": FuseLLMRecipe,
    "block_expansion": BlockExpansionRecipe,
    "depth_upscaling": DepthUpscalingRecipe,
}

Recipe = Annotated[
    CalmRecipe | FuseLLMRecipe | BlockExpansionRecipe | DepthUpscalingRecipe | FinetuneRecipe,
    Field(discriminator="strategy"),
]

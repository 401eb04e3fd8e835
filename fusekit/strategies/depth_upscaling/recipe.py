"""The ``depth_upscaling`` recipe: SOLAR's ``remove: m`` or mergekit-style ``slices``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from fusekit.recipe.common import ModelRef, Strict, SurgeryRecipe
from fusekit.recipe.options import surgery_training


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


class DepthUpscalingRecipe(SurgeryRecipe):
    """SOLAR depth up-scaling: ``remove: m`` or mergekit-style ``slices``."""

    strategy: Literal["depth_upscaling"]
    model: ModelRef | None = None
    remove: int | None = Field(None, ge=1, description="SOLAR's m: layers dropped at the seam")
    slices: list[Annotated[Slice, BeforeValidator(_short_slice)]] | None = None
    merge_method: Literal["passthrough"] | None = Field(
        None, description="accepted so mergekit passthrough configs load unchanged"
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


def from_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``fusekit fuse --strategy depth_upscaling``: ``--slices 0:24,8:32``; trains only with
    ``--data``."""
    recipe: dict[str, Any] = {"strategy": "depth_upscaling", "model": opts["model"]}
    if opts["remove"] is not None:
        recipe["remove"] = opts["remove"]
    if opts["slices"]:
        recipe["slices"] = [s for s in opts["slices"].split(",") if s.strip()]
    return surgery_training(recipe, opts, "depth_upscaling")

"""Depth up-scaling plans: which input layer becomes each output layer.

SOLAR (Kim et al. 2023): from ``n`` layers drop the last ``m`` of one copy and the
first ``m`` of another and stack them — layers ``[0, n-m)`` then ``[m, n)``.  The
general form is a list of slices ``(model, [start, end))``, as in mergekit's
``passthrough`` method, so existing mergekit configs carry over; SOLAR is
``0:24,8:32`` of a 32-layer model.

Everything here is pure: a plan is a list of ``LayerSource(model, layer)``, and
validation against the models' configs needs only their ``config.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusekit.errors import PlanError
from fusekit.io.arch import arch_facts
from fusekit.recipe.common import ModelRef
from fusekit.surgery.restack import LayerSource

__all__ = ["LayerSource", "SliceSpec", "check_plan", "parse_slices", "slices_plan", "solar_plan"]

# Config fields that fix tensor shapes; layers can only be stacked when they agree.
SHAPE_FIELDS = (
    "model_type",
    "hidden_size",
    "n_embd",
    "intermediate_size",
    "n_inner",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "num_local_experts",
    "num_experts",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "partial_rotary_factor",
    "attention_bias",
    "mlp_bias",
)


@dataclass(frozen=True)
class SliceSpec:
    """Layers ``[start, end)`` of ``model``."""

    model: str
    start: int
    end: int


def solar_plan(n_layers: int, remove: int, model: str = "model") -> list[LayerSource]:
    """SOLAR's splice: layers ``[0, n-m)`` then ``[m, n)`` (2(n-m) layers)."""
    if not 1 <= remove < n_layers:
        raise PlanError(
            f"remove: {remove} must be at least 1 and less than the model's {n_layers} layers"
        )
    first = [LayerSource(model, i) for i in range(n_layers - remove)]
    second = [LayerSource(model, i) for i in range(remove, n_layers)]
    return first + second


def default_key(ref: ModelRef | str | Path) -> str:
    """A stable name for a model reference: its path when it has one."""
    if isinstance(ref, (str, Path)):
        return str(ref)
    path = getattr(ref, "path", None)
    return str(path) if path is not None else repr(ref)


_SHORT = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def parse_slices(
    slices: Any, default_model: Any = None, *, key: Callable[[Any], str] = default_key
) -> list[SliceSpec]:
    """Slices from mergekit's form, recipe objects, or the CLI's ``"0:24,8:32"``."""
    if isinstance(slices, Mapping) and "slices" in slices:
        slices = slices["slices"]
    if isinstance(slices, str):
        slices = [s for s in slices.split(",") if s.strip()]
    if not isinstance(slices, Sequence) or not slices:
        raise PlanError("slices is empty; give at least one slice such as 0:24")
    out = []
    for i, item in enumerate(slices):
        if isinstance(item, str):
            m = _SHORT.match(item)
            if not m:
                raise PlanError(f"slices[{i}] {item!r} is not like 0:24 (start:end, end excluded)")
            model, (start, end) = None, (int(m.group(1)), int(m.group(2)))
        else:
            sources = _get(item, "sources")
            if not sources or len(sources) != 1:
                raise PlanError(
                    f"slices[{i}] must have exactly one source (passthrough); several mean a merge"
                )
            model, rng = _get(sources[0], "model"), _get(sources[0], "layer_range")
            if not isinstance(rng, Sequence) or len(rng) != 2:
                raise PlanError(f"slices[{i}].sources[0].layer_range must be [start, end]")
            start, end = int(rng[0]), int(rng[1])
        model = model if model is not None else default_model
        if model is None:
            raise PlanError(f"slices[{i}] names no model and there is no default model")
        if start < 0 or end <= start:
            raise PlanError(f"slices[{i}] layer_range [{start}, {end}) must have 0 <= start < end")
        out.append(SliceSpec(key(model), start, end))
    return out


def slices_plan(
    slices: Any, default_model: Any = None, *, key: Callable[[Any], str] = default_key
) -> list[LayerSource]:
    """The flat layer plan of a slice list (see ``parse_slices``)."""
    return [
        LayerSource(s.model, layer)
        for s in parse_slices(slices, default_model, key=key)
        for layer in range(s.start, s.end)
    ]


def check_plan(
    layers: Sequence[LayerSource], configs: Mapping[str, Mapping[str, Any]], base: str
) -> None:
    """Refuse layers outside their model, and models that cannot be stacked with ``base``."""
    if not layers:
        raise PlanError("the plan has no layers")
    ref = configs[base]
    facts = arch_facts(ref)
    for model in dict.fromkeys(s.model for s in layers):
        cfg = configs[model]
        if cfg.get("model_type") != ref.get("model_type"):
            raise PlanError(
                f"model {model} is {cfg.get('model_type')!r} but {base} is "
                f"{ref.get('model_type')!r}; slices must come from one architecture"
            )
        for field in SHAPE_FIELDS:
            if cfg.get(field) != ref.get(field):
                raise PlanError(
                    f"model {model} has {field}={cfg.get(field)!r} but {base} has "
                    f"{ref.get(field)!r}; slices must come from models of the same width"
                )
        n = facts.num_layers(cfg)
        top = max(s.layer for s in layers if s.model == model)
        if top >= n:
            raise PlanError(
                f"a layer_range reaches layer {top} but model {model} has {n} layers "
                f"(valid ranges lie within [0, {n}))"
            )

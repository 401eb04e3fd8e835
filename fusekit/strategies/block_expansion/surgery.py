"""Streamed block expansion: copy layers per the plan, zero what makes copies identities.

The output is a fresh checkpoint (tensor by tensor, never the whole model in
memory) plus a config with the new layer count and every per-layer field mapped
through the plan, so transformers builds each layer with its new ``layer_idx`` and
cached generation stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusekit.errors import UnsupportedArchitectureError
from fusekit.io.arch import arch_facts
from fusekit.io.sizes import DEFAULT_SHARD_BYTES
from fusekit.strategies.block_expansion.plan import (
    ExpansionPlan,
    check_zero_coverage,
    resolve_zero_mode,
    zero_fills,
)
from fusekit.surgery.config import load_config
from fusekit.surgery.restack import (
    LayerSource,
    build_config,
    describe,
    layer_tensors,
    open_checkpoints,
    plan_tensors,
    restack,
)


@dataclass
class _Prepared:
    """Everything ``expand`` needs, computed (and validated) before writing."""

    key: str
    configs: dict[str, Any]
    ckpts: dict[str, Any]
    layers: list[LayerSource]
    tensors: list[Any]
    mode: str
    zeroed: list[str]
    config: dict[str, Any]


def _prepare(
    folder: Path,
    plan: ExpansionPlan,
    zero: str,
    dtype: str | None,
    config: Mapping[str, Any] | None,
) -> _Prepared:
    key = str(folder)
    configs = {key: dict(config) if config is not None else load_config(folder)}
    facts = arch_facts(configs[key])
    refusal = facts.exact_identity_refusal(configs[key])
    if refusal:
        raise UnsupportedArchitectureError(refusal)
    n = facts.num_layers(configs[key])
    if n != plan.layers_before:
        raise ValueError(f"plan is for {plan.layers_before} layers but {folder} has {n}")
    mode = resolve_zero_mode(facts, zero)
    ckpts = open_checkpoints({key: folder})
    by_layer = layer_tensors(ckpts[key], facts)
    for i in plan.new_layers:
        src = plan.sources[i]
        check_zero_coverage(facts, mode, src, (s for _, s in by_layer.get(src, [])))
    layers = [LayerSource(key, s) for s in plan.sources]
    fills = {i: zero_fills(facts, mode) for i in plan.new_layers}
    tied = facts.ties_embeddings(configs[key])
    tensors = plan_tensors(ckpts, facts, key, layers, tied=tied, fills=fills, dtype=dtype)
    first = facts.layer_name(plan.new_layers[0], "") if plan.new_layers else None
    zeroed = [
        t.name[len(first) :]
        for t in tensors
        if first and t.name.startswith(first) and t.fill is not None
    ]
    config_out = build_config(configs, key, layers, dtype)
    return _Prepared(key, configs, ckpts, layers, tensors, mode, zeroed, config_out)


def _describe(p: _Prepared, plan: ExpansionPlan, max_shard_bytes: int | str) -> dict:
    d = describe(
        p.ckpts, p.configs, p.key, p.layers, p.tensors,
        max_shard_bytes=max_shard_bytes, marked=plan.new_layers,
    )  # fmt: skip
    return {
        **d,
        "zero": p.mode,
        "new_layers": list(plan.new_layers),
        "trainable_layers": list(plan.new_layers),
        "copied_from": [plan.sources[i] for i in plan.new_layers],
        "zeroed_in_each_copy": p.zeroed,
    }


def expansion_describe(
    folder: Path,
    plan: ExpansionPlan,
    *,
    zero: str = "auto",
    dtype: str | None = None,
    max_shard_bytes: int | str = DEFAULT_SHARD_BYTES,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``expand`` would write, from headers and the config only."""
    return _describe(_prepare(Path(folder), plan, zero, dtype, config), plan, max_shard_bytes)


def expand(
    folder: Path,
    plan: ExpansionPlan,
    out: Path,
    *,
    zero: str = "auto",
    dtype: str | None = None,
    max_shard_bytes: int | str = DEFAULT_SHARD_BYTES,
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the expanded model into ``out``; every check runs before the first byte."""
    p = _prepare(Path(folder), plan, zero, dtype, config)
    summary = _describe(p, plan, max_shard_bytes)
    written = restack(
        p.ckpts, p.tensors, p.config, Path(out), base=p.key,
        max_shard_bytes=max_shard_bytes, progress=progress,
    )  # fmt: skip
    return {**summary, "shards": written["shards"]}

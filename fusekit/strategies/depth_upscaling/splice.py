"""Streamed depth up-scaling: write the spliced model tensor by tensor.

Layer tensors are copied byte for byte from the named source layers (renamed by
structure), non-layer tensors (embeddings, final norm, head) come from the base
model, and the config is the base's with every per-layer field remapped — the
step mergekit's passthrough skips on models with ``layer_types``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusekit.io.arch import arch_facts
from fusekit.io.sizes import DEFAULT_SHARD_BYTES
from fusekit.strategies.depth_upscaling.plan import check_plan
from fusekit.surgery.config import load_config, load_full_config
from fusekit.surgery.restack import (
    LayerSource,
    build_config,
    describe,
    open_checkpoints,
    plan_tensors,
    restack,
)


def load_configs(folders: Mapping[str, Path], **kwargs: bool) -> dict[str, dict[str, Any]]:
    """One model: its config.json when complete (no transformers import).  Several:
    full configs, so that the width check compares like with like (defaults filled)."""
    load = load_full_config if len(folders) > 1 else load_config
    return {k: load(f, **kwargs) for k, f in folders.items()}


def _prepare(
    folders: Mapping[str, Path],
    layers: Sequence[LayerSource],
    base: str,
    dtype: str | None,
    configs: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[Any, Any, list[Any], dict[str, Any]]:
    if configs is None:
        configs = load_configs(folders)
    check_plan(layers, configs, base)
    facts = arch_facts(configs[base])
    ckpts = open_checkpoints(folders)
    tensors = plan_tensors(
        ckpts, facts, base, layers, tied=facts.ties_embeddings(configs[base]), dtype=dtype
    )
    return configs, ckpts, tensors, build_config(configs, base, layers, dtype)


def splice_plan(
    folders: Mapping[str, Path],
    layers: Sequence[LayerSource],
    *,
    base: str,
    dtype: str | None = None,
    max_shard_bytes: int | str = DEFAULT_SHARD_BYTES,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What ``splice`` would write, from headers and configs only."""
    configs, ckpts, tensors, _ = _prepare(folders, layers, base, dtype, configs)
    return describe(ckpts, configs, base, layers, tensors, max_shard_bytes=max_shard_bytes)


def splice(
    folders: Mapping[str, Path],
    layers: Sequence[LayerSource],
    out: Path,
    *,
    base: str,
    dtype: str | None = None,
    max_shard_bytes: int | str = DEFAULT_SHARD_BYTES,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the model whose layer ``i`` is ``layers[i]`` into ``out``; returns a summary.

    Everything is validated before the first byte is written.
    """
    configs, ckpts, tensors, config = _prepare(folders, layers, base, dtype, configs)
    plan = describe(ckpts, configs, base, layers, tensors, max_shard_bytes=max_shard_bytes)
    written = restack(
        ckpts, tensors, config, out, base=base, max_shard_bytes=max_shard_bytes, progress=progress
    )
    return {**plan, "shards": written["shards"]}

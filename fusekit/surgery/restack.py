"""Streamed layer restacking: the engine under depth up-scaling and block expansion.

Both strategies build a model whose layer ``i`` is a copy of layer ``layers[i]``
of some input model, with some tensors of some new layers overwritten by a
constant (block expansion's zeroed projections or post-norm gains).  The engine:

1. plans every output tensor from the inputs' safetensors headers alone (names
   parsed structurally, tied ``lm_head`` dropped), so a bad plan fails before a
   byte is written;
2. declares them to a ``ShardedWriter`` and streams them one at a time — read,
   cast, write, drop — so memory holds one tensor, not the model;
3. writes a config built from the input's *full* config with every per-layer
   field remapped, and copies tokenizer and generation config.

Building the result as a fresh checkpoint + config (rather than editing a loaded
model) is what gives every attention module its new ``layer_idx``: transformers
constructs layer ``i`` with index ``i``, so cached generation works.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError, PlanError
from fusekit.io.arch import ArchFacts, arch_facts
from fusekit.io.lazy import LazyCheckpoint
from fusekit.io.provenance import copy_tokenizer_and_generation_config
from fusekit.io.safetensors_format import DTYPES
from fusekit.io.sizes import DEFAULT_SHARD_BYTES, parse_size
from fusekit.io.writer import CHUNK, ShardedWriter, dtype_code
from fusekit.log import bars_disabled
from fusekit.surgery.config import remap_layers_config, set_config_dtype, write_config

_FLOAT_CODES = {"F64", "F32", "F16", "BF16"}


@dataclass(frozen=True)
class LayerSource:
    """New layer = layer ``layer`` of the input called ``model``."""

    model: str
    layer: int


@dataclass(frozen=True)
class OutTensor:
    """One output tensor: where it comes from, or the constant it is filled with."""

    name: str
    model: str
    source: str
    shape: tuple[int, ...]
    code: str  # safetensors dtype code of the *output*
    fill: float | None = None

    @property
    def nbytes(self) -> int:
        n = DTYPES[self.code][1]
        for d in self.shape:
            n *= d
        return n

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def open_checkpoints(folders: Mapping[str, Path]) -> dict[str, LazyCheckpoint]:
    """Header-index every input; refuses folders without safetensors (surgery streams them)."""
    out = {}
    for key, folder in folders.items():
        if not any(Path(folder).glob("*.safetensors")):
            raise ModelIOError(
                f"{folder} has no safetensors weights; layer surgery streams safetensors only, "
                "convert the model first (load it and save_pretrained)"
            )
        out[key] = LazyCheckpoint(folder)
    return out


def layer_tensors(ckpt: LazyCheckpoint, facts: ArchFacts) -> dict[int, list[tuple[str, str]]]:
    """``{layer: [(name, suffix), ...]}`` for every decoder-layer tensor of ``ckpt``."""
    by_layer: dict[int, list[tuple[str, str]]] = {}
    for name in ckpt:
        parsed = facts.layer_index(name)
        if parsed is not None:
            by_layer.setdefault(parsed[0], []).append((name, parsed[1]))
    return by_layer


def _out_code(code: str, dtype: str | None) -> str:
    return dtype_code(dtype) if dtype and code in _FLOAT_CODES else code


def plan_tensors(
    ckpts: Mapping[str, LazyCheckpoint],
    facts: ArchFacts,
    base: str,
    layers: Sequence[LayerSource],
    *,
    tied: bool,
    fills: Mapping[int, Sequence[tuple[str, float]]] | None = None,
    dtype: str | None = None,
) -> list[OutTensor]:
    """Every output tensor, from headers only.  ``fills[i]`` = [(suffix regex, value)]."""
    fills = fills or {}
    per_model = {key: layer_tensors(ck, facts) for key, ck in ckpts.items()}
    base_ck = ckpts[base]
    head: list[OutTensor] = []
    tail: list[OutTensor] = []
    for name in base_ck:
        if facts.layer_index(name) is not None:
            continue
        if tied and name == facts.head_key:
            continue  # safetensors refuses shared tensors; transformers re-ties on load
        info = base_ck.info(name)
        entry = OutTensor(name, base, name, info.shape, _out_code(info.dtype, dtype))
        (tail if name.startswith("lm_head") else head).append(entry)
    body = []
    for i, src in enumerate(layers):
        if not per_model[src.model]:
            raise PlanError(
                f"{ckpts[src.model].folder} has no tensors named {facts.layer_prefix}.<i>.*; "
                "give a *ForCausalLM checkpoint (as save_pretrained writes it)"
            )
        tensors = per_model[src.model].get(src.layer)
        if not tensors:
            raise PlanError(f"model {src.model} has no tensors for layer {src.layer}")
        for name, suffix in tensors:
            info = ckpts[src.model].info(name)
            fill = next((v for pat, v in fills.get(i, ()) if re.fullmatch(pat, suffix)), None)
            out_name = facts.layer_name(i, suffix)
            body.append(
                OutTensor(out_name, src.model, name, info.shape, _out_code(info.dtype, dtype), fill)
            )
    return head + body + tail


def tensor_stats(tensors: Sequence[OutTensor]) -> dict[str, int]:
    largest = max((t.nbytes for t in tensors), default=0)
    return {
        "parameters": sum(t.numel for t in tensors),
        "bytes": sum(t.nbytes for t in tensors),
        "largest_tensor_bytes": largest,
    }


def checkpoint_parameters(ckpt: LazyCheckpoint, facts: ArchFacts, tied: bool) -> int:
    """Parameter count from headers (a tied head counted once, as transformers does)."""
    return sum(ckpt.numel(n) for n in ckpt if not (tied and n == facts.head_key))


def build_config(
    configs: Mapping[str, Mapping[str, Any]],
    base: str,
    layers: Sequence[LayerSource],
    dtype: str | None = None,
) -> dict[str, Any]:
    """The output config: the base's full config with per-layer fields remapped."""
    config = remap_layers_config(
        configs[base],
        [s.layer for s in layers],
        layer_configs=[configs[s.model] for s in layers],
    )
    return set_config_dtype(config, dtype) if dtype else config


def restack(
    ckpts: Mapping[str, LazyCheckpoint],
    tensors: Sequence[OutTensor],
    config: Mapping[str, Any],
    out: Path,
    *,
    base: str,
    max_shard_bytes: int | str = DEFAULT_SHARD_BYTES,
    progress: bool = True,
) -> dict[str, Any]:
    """Stream ``tensors`` into ``out`` with ``config``; copy the base's tokenizer files.

    Unchanged tensors are copied file to file by the kernel and constants are
    written directly, so neither passes through torch; only a dtype cast reads a
    tensor into memory (one at a time).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardedWriter(out, max_shard_bytes)
    for t in tensors:
        writer.declare(t.name, t.shape, t.code)
    items: Any = tensors
    if progress:
        items = tqdm(tensors, desc="writing tensors", unit="tensor", disable=bars_disabled())
    with writer:
        for t in items:
            if t.fill is not None:
                writer.add_constant(t.name, t.fill)
                continue
            info = ckpts[t.model].info(t.source)
            if info.dtype == t.code:
                writer.add_from_file(t.name, info.file, info.start)
                continue
            import torch

            value = ckpts[t.model].get_tensor(t.source).to(getattr(torch, DTYPES[t.code][0]))
            writer.add(t.name, value)
            del value
    write_config(out, config)
    copied = copy_tokenizer_and_generation_config(ckpts[base].folder, out)
    return {"shards": writer.files, "copied": copied, **tensor_stats(tensors)}


def compact_layer_map(layers: Sequence[LayerSource], marked: Sequence[int] = ()) -> str:
    """``"base[0:24] + base[8:32]"``; layers in ``marked`` (new copies) get a ``*``."""
    marked_set = set(marked)
    runs: list[list[Any]] = []  # [model, start, end, is_marked]
    for i, src in enumerate(layers):
        flag = i in marked_set
        last = runs[-1] if runs else None
        if last and last[0] == src.model and last[2] == src.layer and last[3] == flag and not flag:
            last[2] += 1
        else:
            runs.append([src.model, src.layer, src.layer + 1, flag])
    parts = []
    for model, start, end, flag in runs:
        name = Path(model).name or model
        parts.append(f"{name}[{start}]*" if flag else f"{name}[{start}:{end}]")
    return " + ".join(parts)


def describe(
    ckpts: Mapping[str, LazyCheckpoint],
    configs: Mapping[str, Mapping[str, Any]],
    base: str,
    layers: Sequence[LayerSource],
    tensors: Sequence[OutTensor],
    *,
    max_shard_bytes: int | str = DEFAULT_SHARD_BYTES,
    marked: Sequence[int] = (),
) -> dict[str, Any]:
    """The JSON-able plan of a restack, from headers only (what ``--dry-run`` prints)."""

    facts = arch_facts(configs[base])
    stats = tensor_stats(tensors)
    shard = parse_size(max_shard_bytes)
    casts = any(t.code != ckpts[t.model].info(t.source).dtype for t in tensors if t.fill is None)
    return {
        "architecture": facts.model_type,
        "layers_before": {k: facts.num_layers(configs[k]) for k in ckpts},
        "layers_after": len(layers),
        "layer_map": compact_layer_map(layers, marked),
        "layer_sources": [[s.model, s.layer] for s in layers],
        "parameters_before": {
            k: checkpoint_parameters(ck, facts, facts.ties_embeddings(configs[k]))
            for k, ck in ckpts.items()
        },
        "parameters_after": stats["parameters"],
        "disk_bytes": stats["bytes"],
        "shards": max(1, -(-stats["bytes"] // shard)),
        # Beyond the interpreter: unchanged tensors are copied file to file by the kernel
        # and constants written in chunks; a dtype cast holds one tensor twice over.
        "peak_memory_bytes": (
            2 * stats["largest_tensor_bytes"]
            if casts
            else min(stats["largest_tensor_bytes"], CHUNK)
        ),
        "tied_embeddings": facts.ties_embeddings(configs[base]),
    }

"""Config patching for layer surgery.

When layers are inserted, dropped or reordered, the config must say so: the layer
count, and every field that describes layers individually.  Getting this wrong is
silent — transformers 5 builds attention masks from ``layer_types``, so a stale
list either fails to load or quietly gives a layer the wrong (sliding vs full)
attention.

Mapping rule, for a plan ``src`` where new layer ``i`` is a copy of old layer
``src[i]``:

* per-layer lists (``layer_types``, ``no_rope_layers``): ``new[i] = old[src[i]]``;
* lists of layer indices (``mlp_only_layers`` in Qwen-MoE): the new indices whose
  source was listed.  A ``decoder_sparse_step`` > 1 is folded into that list and
  reset to 1, because "every k-th layer" stops meaning the same layers once
  layers move;
* ``max_window_layers`` (Qwen): the number of new layers whose source lies below
  the old threshold.  It preserves the count of full-attention layers and is exact
  whenever the sliding layers form a suffix (SOLAR and block expansion plans on
  standard configs).  It is informational anyway: the explicit ``layer_types``
  written alongside is what transformers 5 reads.

Start from a config that holds every per-layer field: a ``layer_types`` that
transformers derives from the old layer count when ``config.json`` omits it would
otherwise be silently re-derived for the new count.  ``load_config`` returns the
``config.json`` text when it already holds everything (no transformers import, so
streamed surgery never loads torch) and the full transformers config otherwise.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError, PlanError, UnsupportedArchitectureError
from fusekit.io.arch import arch_facts


def load_full_config(folder: str | Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The config with every default and derived field filled in, as a plain dict."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelIOError(f"cannot read the config in {folder}: {first}") from exc
    return cfg.to_dict()


def load_config(folder: str | Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """``config.json`` if it already holds what surgery needs, else ``load_full_config``."""
    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelIOError(f"cannot read {path}: {exc}") from None
    try:
        facts = arch_facts(raw)
    except UnsupportedArchitectureError:
        return raw  # refused by name later; no need to import transformers for that
    if facts.num_layers_field in raw and all(f in raw for f in facts.derived_fields):
        return raw
    return load_full_config(folder, trust_remote_code=trust_remote_code)


def _listed(cfg: Mapping[str, Any], field: str, layer: int) -> bool:
    """Whether old ``layer`` belongs to an index-list field such as ``mlp_only_layers``."""
    if layer in (cfg.get(field) or []):
        return True
    step = int(cfg.get("decoder_sparse_step") or 1)
    return field == "mlp_only_layers" and step > 1 and (layer + 1) % step != 0


def remap_layers_config(
    config: Mapping[str, Any],
    src: Sequence[int],
    *,
    layer_configs: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A new config for a model whose layer ``i`` is old layer ``src[i]``.

    ``layer_configs[i]`` is the config of the model that layer ``i`` comes from
    (depth up-scaling may splice several models); it defaults to ``config``.
    """
    facts = arch_facts(config)
    cfgs = list(layer_configs) if layer_configs is not None else [config] * len(src)
    if len(cfgs) != len(src):
        raise ValueError("layer_configs must have one entry per new layer")
    if not src:
        raise PlanError("the plan has no layers; a model needs at least one")
    for i, (s, cfg) in enumerate(zip(src, cfgs, strict=True)):
        n = facts.num_layers(cfg)
        if not 0 <= s < n:
            raise PlanError(f"new layer {i} comes from layer {s}, but the model has {n} layers")
    old_n = facts.num_layers(config)
    new = copy.deepcopy(dict(config))
    new[facts.num_layers_field] = len(src)
    handled = {facts.num_layers_field}

    for field in facts.per_layer_fields:
        if not isinstance(config.get(field), list):
            continue
        for cfg in cfgs:
            values = cfg.get(field)
            if not isinstance(values, list) or len(values) != facts.num_layers(cfg):
                raise UnsupportedArchitectureError(
                    f"config field {field} should hold one value per layer but has "
                    f"{len(values) if isinstance(values, list) else values!r}; fix the config"
                )
        new[field] = [copy.deepcopy(cfgs[i][field][s]) for i, s in enumerate(src)]
        handled.add(field)

    for field in facts.layer_index_fields:
        if field in config or int(config.get("decoder_sparse_step") or 1) != 1:
            new[field] = [i for i, s in enumerate(src) if _listed(cfgs[i], field, s)]
            if "decoder_sparse_step" in config:
                new["decoder_sparse_step"] = 1
            handled.add(field)

    if isinstance(config.get("max_window_layers"), int):
        new["max_window_layers"] = sum(
            1 for i, s in enumerate(src) if s < int(cfgs[i].get("max_window_layers", old_n))
        )

    for key, value in config.items():
        if (
            key not in handled
            and "layer" in key.lower()
            and isinstance(value, list)
            and len(value) == old_n
            and len(src) != old_n
        ):
            raise UnsupportedArchitectureError(
                f"config field {key} looks like one value per layer, and fusekit does not know "
                f"how to map it for {facts.model_type}; layer surgery would leave it stale"
            )
    return new


def set_config_dtype(config: dict[str, Any], dtype: str) -> dict[str, Any]:
    """Record a weight dtype change (``dtype`` in transformers 5, ``torch_dtype`` before)."""
    config["dtype"] = dtype
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype
    return config


def write_config(folder: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` (sorted, indented, as transformers writes it)."""
    path = Path(folder) / "config.json"
    path.write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    return path

"""Where the decoder blocks are, and which augment block feeds which anchor block.

Layer-index convention (used in recipes, ``composition.json`` and the API):

* ``i >= 0`` names the *output* of decoder block ``i`` (0-based), i.e. the
  residual stream right after that block;
* ``-1`` (or the string ``"embed"``) names the embedding output, i.e. the input
  of block 0.

A pair ``(augment_layer, anchor_layer)`` means: read the augment's stream at
``augment_layer``, and add the cross-attention result into the anchor's stream
at ``anchor_layer`` (so the sum is what anchor block ``anchor_layer + 1`` reads).

Default pairs (the paper fixes ``k = 4`` but not the offset): the augment
blocks ``k-1, 2k-1, …`` (every k-th block, 1-based ``k, 2k, …``), n of them,
paired in order with anchor layers at the same relative depth shifted one block
earlier, ``round((i+1)·N_B/n) - 2`` (clamped at ``-1``).  The shift means the
last pair injects *before* the anchor's last block rather than straight into
the final norm, so every injection has at least one anchor block to use it —
the best prototype setup (augment 1,2,4,8 → anchor embed,1,2,3 in 1-based
blocks) has exactly this shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fusekit.errors import PlanError, UnsupportedArchitectureError
from fusekit.io.arch import arch_facts

EMBED = -1
LayerPair = tuple[int, int]


def parse_layer(value: int | str) -> int:
    """``"embed"`` → -1; integers pass through; anything else is a plan error."""
    if isinstance(value, str):
        if value.strip().lower() in {"embed", "embedding", "embeddings"}:
            return EMBED
        try:
            return int(value)
        except ValueError:
            raise PlanError(f"layer {value!r} is neither an integer nor 'embed'") from None
    return int(value)


def default_pairs(n_augment_layers: int, n_anchor_layers: int, every: int = 4) -> list[LayerPair]:
    """Every ``every``-th augment block paired with evenly spaced anchor layers (see module doc)."""
    if every < 1:
        raise PlanError(f"every must be >= 1, got {every}")
    if every > n_augment_layers:
        raise PlanError(
            f"every: {every} pairs no layer of a {n_augment_layers}-layer augment; use every "
            f"<= {n_augment_layers}, or list the layers in pairs"
        )
    n = n_augment_layers // every
    step = n_augment_layers / n
    pairs: list[LayerPair] = []
    for i in range(n):
        aug = min(n_augment_layers - 1, round((i + 1) * step) - 1)
        anc = max(EMBED, round((i + 1) * n_anchor_layers / n) - 2)
        pairs.append((aug, anc))
    return pairs


def check_pairs(
    pairs: Sequence[Sequence[int | str]], n_augment_layers: int, n_anchor_layers: int, where: str
) -> list[LayerPair]:
    """Normalise ``pairs`` and refuse indices outside the two models."""
    out: list[LayerPair] = []
    if not pairs:
        raise PlanError(f"{where}: no layer pairs; give at least one (augment_layer, anchor_layer)")
    for pair in pairs:
        if len(pair) != 2:
            raise PlanError(f"{where}: pair {list(pair)} is not (augment_layer, anchor_layer)")
        aug, anc = parse_layer(pair[0]), parse_layer(pair[1])
        if not EMBED <= aug < n_augment_layers:
            raise PlanError(
                f"{where}: augment layer {aug} is outside -1..{n_augment_layers - 1} "
                f"(the augment model has {n_augment_layers} blocks)"
            )
        if not EMBED <= anc < n_anchor_layers:
            raise PlanError(
                f"{where}: anchor layer {anc} is outside -1..{n_anchor_layers - 1} "
                f"(the anchor model has {n_anchor_layers} blocks)"
            )
        out.append((aug, anc))
    return out


# --------------------------------------------------------------------------- model facts


def text_config(config: Any) -> Any:
    """The decoder's config (multimodal wrappers keep it under ``text_config``)."""
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def config_facts(config: Any) -> dict[str, int]:
    """Width, depth and heads from a config, whatever the architecture calls them."""
    cfg = text_config(config)

    def first(*names: str) -> int:
        for name in names:
            value = getattr(cfg, name, None)
            if value is None and isinstance(cfg, dict):
                value = cfg.get(name)
            if value is not None:
                return int(value)
        raise PlanError(f"config of {getattr(cfg, 'model_type', '?')} has none of {names}")

    return {
        "hidden_size": first("hidden_size", "n_embd", "d_model"),
        "num_layers": first("num_hidden_layers", "n_layer", "num_layers"),
        "num_heads": first("num_attention_heads", "n_head", "num_heads"),
    }


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder blocks of a causal LM.

    Tries the shared model-IO layer first, then the common attribute paths, then
    the longest ModuleList of identical blocks — which covers every HF decoder
    without an architecture table.
    """
    import torch.nn as nn

    try:  # the shared per-architecture facts know the checkpoint's layer prefix
        found = model.get_submodule(arch_facts(model.config).layer_prefix)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    except (AttributeError, UnsupportedArchitectureError):
        pass

    for path in (
        "model.layers",
        "model.decoder.layers",
        "transformer.h",
        "gpt_neox.layers",
        "model.language_model.layers",
        "transformer.blocks",
    ):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    best = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise PlanError(f"cannot find the decoder blocks of {type(model).__name__}")
    return best

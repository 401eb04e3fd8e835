"""Assembling a composition: pairs, heads, tokenizer handling, seeded initialisation.

``compose`` works on model objects (tests, notebooks, baselines);
``compose_from_paths`` loads local folders and remembers them so that
``io.save_composition`` can name and hash the bases.  ``plan_composition``
describes the same thing from config files alone, for ``--dry-run``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError, PlanError
from fusekit.io.lazy import LazyCheckpoint
from fusekit.io.loading import load_causal_lm, load_tokenizer
from fusekit.strategies.calm.layers import check_pairs, config_facts, default_pairs
from fusekit.strategies.calm.modeling import (
    AugmentLink,
    ComposedModel,
    Composition,
    CompositionConfig,
)
from fusekit.strategies.calm.tokens import same_tokenizer


def composition_config(
    anchor_config: Any,
    augment_configs: Sequence[Any],
    *,
    every: int = 4,
    pairs: Sequence[Sequence[Sequence[int | str]]] | None = None,
    heads: int | None = None,
    mask: str = "causal",
    augment_mode: str = "iterative",
    kv_norm: bool = False,
    scale_output: bool = False,
    null_key: bool = False,
) -> CompositionConfig:
    """The composition's shape from the bases' configs (objects or ``config.json`` dicts)."""
    anchor = config_facts(anchor_config)
    if pairs is not None and len(pairs) != len(augment_configs):
        raise PlanError(
            f"pairs has {len(pairs)} lists for {len(augment_configs)} augment models; "
            "give one list of (augment_layer, anchor_layer) per augment model"
        )
    links = []
    for k, cfg in enumerate(augment_configs):
        facts = config_facts(cfg)
        if pairs is not None:
            chosen = check_pairs(pairs[k], facts["num_layers"], anchor["num_layers"], f"pairs[{k}]")
        else:
            chosen = default_pairs(facts["num_layers"], anchor["num_layers"], every)
        links.append(AugmentLink(hidden_size=facts["hidden_size"], pairs=chosen))
    return CompositionConfig(
        anchor_hidden_size=anchor["hidden_size"],
        heads=heads or anchor["num_heads"],
        augments=links,
        mask=mask,
        augment_mode=augment_mode,
        kv_norm=kv_norm,
        scale_output=scale_output,
        null_key=null_key,
    )


def compose(
    anchor: Any,
    augments: Sequence[Any],
    *,
    anchor_tokenizer: Any = None,
    augment_tokenizers: Sequence[Any] | None = None,
    seed: int = 0,
    config: CompositionConfig | None = None,
    **shape: Any,
) -> ComposedModel:
    """A composed model around ``anchor`` and ``augments`` with a freshly initialised Θ_C.

    ``shape`` takes ``every``, ``pairs``, ``heads``, ``mask``, ``augment_mode`` and
    ``kv_norm`` (see ``composition_config``).  Initialisation is seeded and does
    not disturb the global RNG.
    """
    import torch

    augment_tokenizers = list(augment_tokenizers or [None] * len(augments))
    if config is None:
        config = composition_config(anchor.config, [a.config for a in augments], **shape)
    shared = [same_tokenizer(anchor_tokenizer, t) for t in augment_tokenizers]
    if not all(shared):
        for name, tok in [
            ("anchor", anchor_tokenizer),
            *((f"augment {k}", t) for k, t in enumerate(augment_tokenizers)),
        ]:
            if tok is None or not getattr(tok, "is_fast", False):
                raise PlanError(
                    f"the {name} model needs a fast tokenizer (character offsets) when the "
                    "anchor and augment tokenizers differ"
                )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        composition = Composition(config)
    device = next(anchor.parameters()).device
    composition.to(device)
    return ComposedModel(
        anchor,
        list(augments),
        config,
        composition,
        anchor_tokenizer=anchor_tokenizer,
        augment_tokenizers=augment_tokenizers,
        shared_tokenizer=shared,
    )


def load_base(
    source: Any, *, dtype: Any = None, attn_implementation: str | None = None
) -> tuple[Any, Any]:
    """A frozen causal LM and its tokenizer (None if the folder has none).

    ``source`` is a folder, or a prepared model input carrying the recipe's
    ``allow_pickle`` / ``trust_remote_code`` for that model; ``dtype`` and
    ``attn_implementation`` are ``load_causal_lm``'s.
    """

    path = getattr(source, "path", source)
    trust = bool(getattr(source, "trust_remote_code", False))
    model = load_causal_lm(
        path,
        dtype=dtype,
        attn_implementation=attn_implementation,
        allow_pickle=bool(getattr(source, "allow_pickle", False)),
        trust_remote_code=trust,
    )
    try:
        tokenizer = load_tokenizer(path, trust_remote_code=trust)
    except ModelIOError:
        tokenizer = None
    return model, tokenizer


def compose_from_paths(
    anchor_path: Any,
    augment_paths: Sequence[Any],
    *,
    seed: int = 0,
    load: Callable[[Any], Mapping[str, Any]] | None = None,
    **shape: Any,
) -> ComposedModel:
    """``compose`` on models loaded from local folders (or prepared model inputs); the
    folders are remembered for saving.  ``load(source)`` gives one base's ``load_base``
    options (dtype, attention kernel); None keeps transformers' defaults."""

    def base(source: Any) -> tuple[Any, Any]:
        return load_base(source, **(load(source) if load is not None else {}))

    anchor, anchor_tok = base(anchor_path)
    loaded = [base(p) for p in augment_paths]
    model = compose(
        anchor,
        [m for m, _ in loaded],
        anchor_tokenizer=anchor_tok,
        augment_tokenizers=[t for _, t in loaded],
        seed=seed,
        **shape,
    )
    model.base_paths = {
        "anchor": Path(getattr(anchor_path, "path", anchor_path)),
        "augments": [Path(getattr(p, "path", p)) for p in augment_paths],
    }
    return model


def _read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelIOError(f"{folder} has no config.json")
    return json.loads(path.read_text())


def _weight_count(folder: Path) -> int | None:
    """Parameters of a folder from its safetensors headers (no weights read)."""
    try:
        ckpt = LazyCheckpoint(folder)
        return sum(ckpt._infos[k].numel for k in ckpt)
    except Exception:
        return None


def plan_composition(
    anchor_path: str | Path, augment_paths: Sequence[str | Path], **shape: Any
) -> dict[str, Any]:
    """Pairs, heads and Θ_C's size (and share of the anchor) from config files only."""
    anchor_cfg = _read_config(Path(anchor_path))
    aug_cfgs = [_read_config(Path(p)) for p in augment_paths]
    config = composition_config(anchor_cfg, aug_cfgs, **shape)
    theta = config.parameter_count()
    anchor_params = _weight_count(Path(anchor_path))
    return {
        "anchor": str(anchor_path),
        "augments": [str(p) for p in augment_paths],
        "pairs": [[list(p) for p in a.pairs] for a in config.augments],
        "heads": config.heads,
        "mask": config.mask,
        "augment_mode": config.augment_mode,
        "composition_parameters": theta,
        "anchor_parameters": anchor_params,
        "share_of_anchor": (theta / anchor_params) if anchor_params else None,
        "composition_bytes_fp32": theta * 4,
    }

"""Saving Θ_C alone, and re-attaching it to the (hash-checked) base models.

A composition folder holds ``composition.safetensors`` (Θ_C only, never a base
weight) and ``composition.json``: the base models (path + content hash), the
layer pairs, heads, mask, augment mode and what each tokenizer is.  Loading
refuses a base whose content hash differs from the recorded one — a composition
is meaningless on different bases — unless ``check_hashes=False``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError
from fusekit.io.hashing import folder_hash

WEIGHTS_NAME = "composition.safetensors"
CONFIG_NAME = "composition.json"
FORMAT = "fusekit-calm"
FORMAT_VERSION = 1


def _tokenizer_info(tokenizer: Any, shared: bool | None) -> dict[str, Any] | None:
    if tokenizer is None:
        return None
    info: dict[str, Any] = {
        "class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "is_fast": bool(getattr(tokenizer, "is_fast", False)),
    }
    if shared is not None:
        info["shared_with_anchor"] = shared
    return info


def save_composition(
    model: Any,
    out_dir: str | Path,
    *,
    anchor_path: str | Path | None = None,
    augment_paths: Sequence[str | Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``composition.safetensors`` + ``composition.json`` into ``out_dir``."""
    from safetensors.torch import save_file

    paths = getattr(model, "base_paths", None) or {}
    anchor_path = anchor_path or paths.get("anchor")
    augment_paths = list(augment_paths or paths.get("augments") or [])
    if anchor_path is None or len(augment_paths) != len(model.augments):
        raise ModelIOError(
            "saving a composition needs the base model folders: pass anchor_path and "
            "augment_paths (or build it with compose_from_paths)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.composition.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": FORMAT})
    cfg = model.composition_config
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "anchor": {
            "path": str(Path(anchor_path).resolve()),
            "hash": folder_hash(anchor_path),
            "tokenizer": _tokenizer_info(model.anchor_tokenizer, None),
        },
        "augments": [
            {
                "path": str(Path(p).resolve()),
                "hash": folder_hash(p),
                "pairs": [list(pair) for pair in link.pairs],
                "tokenizer": _tokenizer_info(tok, shared),
            }
            for p, link, tok, shared in zip(
                augment_paths,
                cfg.augments,
                model.augment_tokenizers,
                model.shared_tokenizer,
                strict=True,
            )
        ],
        "heads": cfg.heads,
        "mask": cfg.mask,
        "augment_mode": cfg.augment_mode,
        "composition": cfg.to_dict(),
        "parameters": model.parameter_report(),
        **(extra or {}),
    }
    (out / CONFIG_NAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out


def read_composition_json(path: str | Path) -> dict[str, Any]:
    """The parsed ``composition.json`` of a composition folder, with a clear error if absent."""
    folder = Path(path)
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ModelIOError(f"{folder} has no {CONFIG_NAME}; is it a CALM composition folder?")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelIOError(f"{file} is not valid JSON ({exc.msg})") from None
    if doc.get("format") != FORMAT:
        raise ModelIOError(
            f"{file} is not a fusekit CALM composition (format {doc.get('format')!r})"
        )
    return doc


def is_composition(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def _checked_base(
    role: str, recorded: dict[str, Any], override: str | Path | None, check_hashes: bool, file: Path
) -> Path:
    path = Path(override) if override is not None else Path(recorded["path"])
    if not path.is_dir():
        raise ModelIOError(
            f"{file}: the {role} model folder {path} does not exist; pass its new location "
            f"(load_composed(..., {'anchor' if role == 'anchor' else 'augments'}=...))"
        )
    if check_hashes:
        found = folder_hash(path)
        if found != recorded["hash"]:
            raise ModelIOError(
                f"{file}: the {role} model at {path} has changed (hash {found[:19]}… ≠ recorded "
                f"{recorded['hash'][:19]}…); pass check_hashes=False (CLI: --no-check-hashes) "
                "to load it anyway"
            )
    return path


def load_composed(
    path: str | Path,
    *,
    check_hashes: bool = True,
    anchor: str | Path | None = None,
    augments: Sequence[str | Path] | None = None,
    dtype: Any = None,
) -> Any:
    """A ``ComposedModel`` from a composition folder, attached to its recorded bases.

    ``anchor``/``augments`` point at moved base folders; their hashes are still
    checked unless ``check_hashes=False``.
    """
    from safetensors.torch import load_file

    from fusekit.strategies.calm.build import load_base
    from fusekit.strategies.calm.modeling import ComposedModel, Composition, CompositionConfig
    from fusekit.strategies.calm.tokens import same_tokenizer

    folder = Path(path)
    doc = read_composition_json(folder)
    file = folder / CONFIG_NAME
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelIOError(f"{folder} has no {WEIGHTS_NAME}; the composition was not saved fully")
    recorded_augments = doc["augments"]
    if augments is not None and len(augments) != len(recorded_augments):
        raise ModelIOError(
            f"{file} names {len(recorded_augments)} augment models but {len(augments)} were given"
        )
    anchor_path = _checked_base("anchor", doc["anchor"], anchor, check_hashes, file)
    augment_paths = [
        _checked_base(f"augment {k}", rec, augments[k] if augments else None, check_hashes, file)
        for k, rec in enumerate(recorded_augments)
    ]
    anchor_model, anchor_tok = load_base(anchor_path, dtype=dtype)
    loaded = [load_base(p, dtype=dtype) for p in augment_paths]
    config = CompositionConfig.from_dict(doc["composition"])
    composition = Composition(config)
    try:
        composition.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as exc:
        raise ModelIOError(f"{weights} does not match {file}: {str(exc).splitlines()[0]}") from None
    composition.to(next(anchor_model.parameters()).device)
    tokenizers = [t for _, t in loaded]
    model = ComposedModel(
        anchor_model,
        [m for m, _ in loaded],
        config,
        composition,
        anchor_tokenizer=anchor_tok,
        augment_tokenizers=tokenizers,
        shared_tokenizer=[same_tokenizer(anchor_tok, t) for t in tokenizers],
    )
    model.base_paths = {"anchor": anchor_path, "augments": augment_paths}
    model.eval()
    return model

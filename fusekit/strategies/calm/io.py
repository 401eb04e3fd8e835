"""Saving Θ_C alone, and re-attaching it to the (hash-checked) base models.

A composition folder holds ``composition.safetensors`` (Θ_C only, never a base
weight) and ``composition.json``: the base models (path + content hash), the
layer pairs, heads, mask, augment mode and what each tokenizer is.  Each base is
recorded both absolute and relative to the composition folder, so a project
moved as a whole (outputs and bases together) still loads; a base moved on its
own is re-pointed with ``bases={"anchor": DIR}`` (CLI: ``--base anchor=DIR``).
Loading refuses a base whose content hash differs from the recorded one — a
composition is meaningless on different bases — unless ``check_hashes=False``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError
from fusekit.io.hashing import folder_hash
from fusekit.io.safetensors_format import read_header
from fusekit.strategies.calm.tokens import same_tokenizer

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

    def where(base: str | Path) -> dict[str, str]:
        # relative to the folder the output is renamed to: its temporary sibling has
        # the same parent, so the relative path holds for both
        absolute = Path(base).resolve()
        return {"path": str(absolute), "relative": os.path.relpath(absolute, out.resolve())}

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "anchor": {
            **where(anchor_path),
            "hash": folder_hash(anchor_path),
            "tokenizer": _tokenizer_info(model.anchor_tokenizer, None),
        },
        "augments": [
            {
                **where(p),
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


def base_names(n_augments: int) -> list[str]:
    """The names ``bases=`` / ``--base NAME=DIR`` accept: anchor, augment0, augment1, …"""
    return ["anchor", *(f"augment{k}" for k in range(n_augments))]


def _checked_base(
    name: str, recorded: dict[str, Any], override: str | Path | None, check_hashes: bool, file: Path
) -> Path:
    """The base folder to attach: the override, else the recorded relative path (the
    project moved as a whole), else the recorded absolute one; hash-checked."""
    if override is not None:
        candidates = [Path(override).expanduser()]
    else:
        candidates = [Path(recorded["path"])]
        if recorded.get("relative"):
            candidates.insert(0, file.parent / recorded["relative"])
    path = next((c for c in candidates if c.is_dir()), None)
    if path is None:
        raise ModelIOError(
            f"{file}: the {name} model folder {candidates[-1]} does not exist; point to its new "
            f"location with --base {name}=DIR (Python: load_composed(..., bases={{{name!r}: DIR}}))"
        )
    if check_hashes:
        found = folder_hash(path)
        if found != recorded["hash"]:
            raise ModelIOError(
                f"{file}: the {name} model at {path} has changed (hash {found[:19]}… ≠ recorded "
                f"{recorded['hash'][:19]}…); point --base {name}=DIR at the folder it was trained "
                "on (Python: check_hashes=False loads it anyway)"
            )
    return path.resolve()


def _overrides(
    bases: Mapping[str, str | Path] | None, n_augments: int, file: Path
) -> dict[str, str | Path]:
    names = base_names(n_augments)
    given = dict(bases or {})
    if n_augments == 1 and "augment" in given:
        given["augment0"] = given.pop("augment")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ModelIOError(
            f"{file} has no base named {unknown[0]!r}; its bases are {', '.join(names)}"
        )
    return given


def _read_weights(weights: Path) -> dict[str, Any]:
    """Θ_C, with a truncated or corrupt file as one line instead of a Rust panic."""
    from safetensors.torch import load_file

    try:
        read_header(weights)
        return load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ModelIOError(
            f"{weights} is not a readable safetensors file ({str(exc).splitlines()[0]}); "
            "the composition is damaged — train it again"
        ) from None


def load_composed(
    path: str | Path,
    *,
    check_hashes: bool = True,
    bases: Mapping[str, str | Path] | None = None,
    dtype: Any = None,
) -> Any:
    """A ``ComposedModel`` from a composition folder, attached to its recorded bases.

    ``bases`` re-points moved base folders by name (``anchor``, ``augment0``, … —
    ``augment`` when there is one); their hashes are still checked unless
    ``check_hashes=False``.
    """
    from fusekit.strategies.calm.build import load_base
    from fusekit.strategies.calm.modeling import ComposedModel, Composition, CompositionConfig

    folder = Path(path)
    doc = read_composition_json(folder)
    file = folder / CONFIG_NAME
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelIOError(f"{folder} has no {WEIGHTS_NAME}; the composition was not saved fully")
    recorded_augments = doc["augments"]
    given = _overrides(bases, len(recorded_augments), file)
    anchor_path = _checked_base("anchor", doc["anchor"], given.get("anchor"), check_hashes, file)
    augment_paths = [
        _checked_base(f"augment{k}", rec, given.get(f"augment{k}"), check_hashes, file)
        for k, rec in enumerate(recorded_augments)
    ]
    anchor_model, anchor_tok = load_base(anchor_path, dtype=dtype)
    loaded = [load_base(p, dtype=dtype) for p in augment_paths]
    config = CompositionConfig.from_dict(doc["composition"])
    composition = Composition(config)
    try:
        composition.load_state_dict(_read_weights(weights), strict=True)
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

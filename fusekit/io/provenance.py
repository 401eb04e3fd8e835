"""What goes into every output besides the weights: provenance, a model card, tokenizer.

``fusekit.json`` makes an output reproducible and checkable: the recipe and plan
that made it, the versions that ran, and content hashes of every input folder (so
a later load can refuse a base model that changed).  For block expansion it also
names the new, trainable layers at the top level (``trainable_layers``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from fusekit.io.hashing import folder_hash
from fusekit.version import __version__

PROVENANCE_FILE = "fusekit.json"

# Files that make up a tokenizer and generation defaults, across tokenizer kinds.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        if dist == "fusekit":
            return __version__
        return "not installed"


def _jsonable(value: Any) -> Any:
    """Paths and other odd leaves become strings; json.dumps handles the rest."""
    return json.loads(json.dumps(value, default=str))


def write_provenance(
    folder: str | Path,
    *,
    strategy: str,
    recipe: Mapping[str, Any],
    plan: Mapping[str, Any],
    inputs: Mapping[str, str | Path],
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``fusekit.json``; returns its path.  Hashing reads every input file once."""
    record: dict[str, Any] = {
        "fusekit_version": _version("fusekit"),
        "torch_version": _version("torch"),
        "transformers_version": _version("transformers"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "strategy": strategy,
        "inputs": {
            name: {"path": str(path), "hash": folder_hash(path)} for name, path in inputs.items()
        },
        "recipe": _jsonable(dict(recipe)),
        "plan": _jsonable(dict(plan)),
        "summary": _jsonable(dict(summary or {})),
    }
    if summary and "trainable_layers" in summary:
        record["trainable_layers"] = [int(i) for i in summary["trainable_layers"]]
    path = Path(folder) / PROVENANCE_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def versions() -> dict[str, str]:
    """The versions of the libraries that decide a run's numbers."""
    names = ("fusekit", "torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers")
    return {name: _version(name) for name in names}


def write_run_record(folder: str | Path, result: Any) -> Path:
    """Write a run's ``fusekit.json``: its ``RunResult`` plus when it was made.

    The shape is the same for every strategy; block expansion also names the new,
    trainable layers at the top level (``trainable_layers``) for later fine-tuning.
    """
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **result.model_dump(mode="json", exclude={"output"}),
    }
    layers = result.details.get("trainable_layers")
    if layers is not None:
        record["trainable_layers"] = [int(i) for i in layers]
    path = Path(folder) / PROVENANCE_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_provenance(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_model_card(
    folder: str | Path,
    *,
    title: str,
    body: str,
    base_models: Sequence[str],
    strategy: str | None = None,
    tags: Sequence[str] = (),
) -> Path:
    """Write ``README.md`` with Hub-style YAML front matter.

    ``strategy`` defaults to the one recorded in ``fusekit.json`` when that exists.
    """
    import yaml

    if strategy is None:
        strategy = (read_provenance(folder) or {}).get("strategy")
    all_tags = ["fusekit", *([strategy] if strategy else []), *tags]
    front: dict[str, Any] = {
        "library_name": "transformers",
        "tags": list(dict.fromkeys(all_tags)),
    }
    if base_models:
        front["base_model"] = list(base_models)
        license_ = base_license(base_models)
        if license_:
            front["license"] = license_
    text = "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n"
    text += f"# {title}\n\n{body.rstrip()}\n"
    path = Path(folder) / "README.md"
    path.write_text(text)
    return path


def card_metadata(folder: str | Path) -> dict[str, Any]:
    """The YAML front matter of a folder's ``README.md`` (empty when it has none)."""
    import yaml

    path = Path(folder) / "README.md"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return {}
    try:
        front = yaml.safe_load(text[4 : text.index("\n---", 4)])
    except yaml.YAMLError:
        return {}
    return front if isinstance(front, dict) else {}


def base_license(base_models: Sequence[str]) -> str | None:
    """The license the bases' model cards declare, when they all declare the same one.

    A fused model is a derivative of every base, so a license is carried only when
    there is no choice to make; mixed or missing licenses are left to the user.
    """
    found = {str(card_metadata(b).get("license") or "") for b in base_models}
    return found.pop() if len(found) == 1 and "" not in found else None


def copy_tokenizer_and_generation_config(src: str | Path, dst: str | Path) -> list[str]:
    """Copy tokenizer files and ``generation_config.json`` that exist in ``src``; returns names."""
    copied = []
    for name in TOKENIZER_FILES:
        path = Path(src) / name
        if path.is_file():
            shutil.copyfile(path, Path(dst) / name)
            copied.append(name)
    return copied

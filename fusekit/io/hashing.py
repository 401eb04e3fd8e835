"""Content hashes of model folders, for provenance and for refusing changed bases.

Hashing covers the files that define a model's function (weights, config,
tokenizer) and skips cards, logs and caches, so re-saving a README does not
change a model's identity.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HASHED_SUFFIXES = (".safetensors", ".json", ".bin", ".pt", ".model", ".txt")
_SKIPPED_NAMES = {"fusekit.json", "README.md", "trainer_state.json", "training_args.json"}
_CHUNK = 8 << 20


def file_hash(path: Path) -> str:
    """sha256 of one file, streamed in 8 MiB chunks so large shards never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_hash(folder: str | Path) -> str:
    """A stable sha256 over the model-defining files of ``folder`` (names and contents)."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        if path.name in _SKIPPED_NAMES or not path.name.endswith(_HASHED_SUFFIXES):
            continue
        digest.update(path.name.encode())
        digest.update(file_hash(path).encode())
    return "sha256:" + digest.hexdigest()


def data_hash(path: str | Path) -> str:
    """sha256 of a data file, or of every file (names and contents) under a ``datasets`` folder."""
    root = Path(path)
    if root.is_file():
        return "sha256:" + file_hash(root)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file_hash(file).encode())
    return "sha256:" + digest.hexdigest()

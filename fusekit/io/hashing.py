"""Content hashes of model folders, for provenance and for refusing changed bases.

Hashing covers the files that define a model's function (weights, config,
tokenizer) and skips cards, logs and caches, so re-saving a README does not
change a model's identity.

A folder's hash is remembered for the life of the process, keyed by its files'
names, sizes, inodes and modification times: a run reads a 7B base's 14 GB
once for its hash, not once per stage that records it (a rewritten file gets a
new modification time and is hashed again).
"""

from __future__ import annotations

import hashlib
import threading
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


_MEMO: dict[tuple[str, tuple[tuple[str, int, int, int], ...]], str] = {}
_MEMO_LOCK = threading.Lock()


def _hashed_files(root: Path) -> list[Path]:
    return [
        p for p in sorted(root.iterdir())
        if p.is_file() and p.name not in _SKIPPED_NAMES and p.name.endswith(_HASHED_SUFFIXES)
    ]  # fmt: skip


def folder_hash(folder: str | Path) -> str:
    """A stable sha256 over the model-defining files of ``folder`` (names and contents)."""
    root = Path(folder)
    files = _hashed_files(root)
    stats = [(p.name, p.stat()) for p in files]
    key = (
        str(root.resolve()),
        tuple((name, st.st_size, st.st_ino, st.st_mtime_ns) for name, st in stats),
    )
    with _MEMO_LOCK:
        known = _MEMO.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_hash(path).encode())
    result = "sha256:" + digest.hexdigest()
    with _MEMO_LOCK:
        _MEMO[key] = result
    return result


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

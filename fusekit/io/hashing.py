"""Content hashes of model folders, for provenance and for refusing changed bases.

Hashing covers the files that define a model's function (weights, config,
tokenizer) and skips cards, logs and caches, so re-saving a README does not
change a model's identity.

A folder's hash is remembered for the life of the process, keyed by its files'
names, sizes, devices, inodes and modification and change times: a run reads a
7B base's 14 GB once for its hash, not once per stage that records it.  A file
rewritten in place gets a new change time (the kernel sets it on every write,
and nothing but the kernel can set it), so it is hashed again; a folder whose
files changed within the last two seconds is not remembered once hashed, since a
coarse file-system clock could give a second write the same times.  Two threads
asking for the same folder at once share one reading of it: the second waits for
the first's result instead of reading the bytes again.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import Future
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


_Key = tuple[str, tuple[tuple[str, int, int, int, int, int], ...]]
_MEMO: dict[_Key, Future[str]] = {}
_MEMO_LOCK = threading.Lock()
#: Folders with a file changed more recently than this are not remembered once hashed.
_SETTLED_S = 2.0


def _hashed_files(root: Path) -> list[Path]:
    return [
        p for p in sorted(root.iterdir())
        if p.is_file() and p.name not in _SKIPPED_NAMES and p.name.endswith(_HASHED_SUFFIXES)
    ]  # fmt: skip


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_hash(path).encode())
    return "sha256:" + digest.hexdigest()


def folder_hash(folder: str | Path) -> str:
    """A stable sha256 over the model-defining files of ``folder`` (names and contents)."""
    root = Path(folder)
    files = _hashed_files(root)
    stats = [(p.name, p.stat()) for p in files]
    newest = max((max(st.st_mtime_ns, st.st_ctime_ns) for _, st in stats), default=0)
    settled = time.time_ns() - newest >= _SETTLED_S * 1e9
    key: _Key = (
        str(root.resolve()),
        tuple(
            (name, st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            for name, st in stats
        ),
    )
    with _MEMO_LOCK:
        known = _MEMO.get(key)
        if known is None:
            mine: Future[str] = Future()
            _MEMO[key] = mine
    if known is not None:
        return known.result()  # computed, or being computed by another thread
    try:
        result = _digest(files)
    except BaseException as exc:
        with _MEMO_LOCK:
            del _MEMO[key]  # a later call tries again
        mine.set_exception(exc)
        raise
    mine.set_result(result)
    if not settled:  # shared while it ran; a later write in the same clock tick would
        with _MEMO_LOCK:  # keep these times, so it is not remembered past now
            _MEMO.pop(key, None)
    return result


def hash_in_background(folders: list[Path]) -> threading.Thread:
    """Start hashing ``folders`` in a daemon thread; ``folder_hash`` then waits for it.

    Hashing a base reads every byte of it; on a 7B base that takes as long as the
    surgery, so a run starts it beside its own work (both mostly wait on the disk or
    the kernel).  A daemon thread never holds up an interrupted or failed run, and a
    failure here is raised again by the caller's own ``folder_hash``.
    """

    def work() -> None:
        for folder in folders:
            try:
                folder_hash(folder)
            except Exception:  # the caller's own folder_hash reports it
                continue

    thread = threading.Thread(target=work, name="fusekit-hash", daemon=True)
    thread.start()
    return thread


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

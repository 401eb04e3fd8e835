"""Folder hashes are remembered per process, shared between threads, and forgotten when
a file changes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from fusekit.io import hashing


def _folder(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text('{"a": 1}')
    (root / "model.safetensors").write_bytes(b"\0" * 64)
    (root / "README.md").write_text("not hashed")
    return root


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files hashed, in order; files count as settled at once."""
    seen: list[str] = []
    real = hashing.file_hash
    monkeypatch.setattr(hashing, "file_hash", lambda p: seen.append(p.name) or real(p))
    monkeypatch.setattr(hashing, "_SETTLED_S", 0.0)
    return seen


def test_a_folder_is_read_once_until_a_file_changes(tmp_path: Path, reads: list[str]) -> None:
    folder = _folder(tmp_path / "m")
    first = hashing.folder_hash(folder)
    assert sorted(reads) == ["config.json", "model.safetensors"]
    assert hashing.folder_hash(folder) == first and len(reads) == 2  # from the memo

    (folder / "README.md").write_text("edited")  # not a model-defining file
    assert hashing.folder_hash(folder) == first and len(reads) == 2

    # Rewritten in place, same size, its modification time put back: the change time
    # (which only the kernel sets) still tells the memo that the bytes changed.
    config = folder / "config.json"
    before = config.stat()
    time.sleep(0.01)
    config.write_text('{"a": 2}')
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert config.stat().st_mtime_ns == before.st_mtime_ns
    changed = hashing.folder_hash(folder)
    assert changed != first and len(reads) == 4


def test_recently_written_files_are_not_remembered(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "_SETTLED_S", 3600.0)
    folder = _folder(tmp_path / "m")
    assert hashing.folder_hash(folder) == hashing.folder_hash(folder)
    assert len(reads) == 4  # read twice: the files are younger than the settling time


def test_two_threads_share_one_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path / "m")
    monkeypatch.setattr(hashing, "_SETTLED_S", 0.0)
    started, go = threading.Event(), threading.Event()
    seen: list[str] = []
    real = hashing.file_hash

    def slow(path: Path) -> str:
        seen.append(path.name)
        started.set()
        go.wait(10)
        return real(path)

    monkeypatch.setattr(hashing, "file_hash", slow)
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(hashing.folder_hash(folder)))
    second = threading.Thread(target=lambda: results.append(hashing.folder_hash(folder)))
    first.start()
    assert started.wait(10)
    second.start()
    time.sleep(0.2)  # the second call is now waiting on the first's reading
    go.set()
    first.join(10)
    second.join(10)
    assert len(results) == 2 and results[0] == results[1]
    assert sorted(seen) == ["config.json", "model.safetensors"]  # read once, not twice


def test_a_failed_reading_is_not_remembered(tmp_path: Path, reads: list[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    folder = _folder(tmp_path / "m")
    real = hashing.file_hash
    monkeypatch.setattr(hashing, "file_hash", lambda p: (_ for _ in ()).throw(OSError("EIO")))
    with pytest.raises(OSError, match="EIO"):
        hashing.folder_hash(folder)
    monkeypatch.setattr(hashing, "file_hash", real)
    assert hashing.folder_hash(folder).startswith("sha256:")


def test_same_content_same_hash_in_another_folder(tmp_path: Path) -> None:
    assert hashing.folder_hash(_folder(tmp_path / "a")) == hashing.folder_hash(
        _folder(tmp_path / "b")
    )


def test_a_background_hash_is_the_one_later_calls_get(
    tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "m")
    missing = tmp_path / "gone"  # a failure in the background is left to the caller
    uncaught: list[object] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    hashing.hash_in_background([missing, folder]).join(10)
    assert sorted(reads) == ["config.json", "model.safetensors"] and not uncaught
    assert hashing.folder_hash(folder).startswith("sha256:")
    assert len(reads) == 2  # the background's reading, not a second one
    with pytest.raises(FileNotFoundError):
        hashing.folder_hash(missing)


def test_an_unsettled_folder_is_still_read_once_by_two_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written just now are not remembered, but callers at the same moment share."""
    folder = _folder(tmp_path / "m")
    monkeypatch.setattr(hashing, "_SETTLED_S", 3600.0)
    started, go = threading.Event(), threading.Event()
    seen: list[str] = []
    real = hashing.file_hash

    def slow(path: Path) -> str:
        seen.append(path.name)
        started.set()
        go.wait(10)
        return real(path)

    monkeypatch.setattr(hashing, "file_hash", slow)
    first = hashing.hash_in_background([folder])
    assert started.wait(10)
    second = threading.Thread(target=hashing.folder_hash, args=(folder,))
    second.start()
    time.sleep(0.2)
    go.set()
    first.join(10)
    second.join(10)
    assert len(seen) == 2  # one reading for both callers
    hashing.folder_hash(folder)
    assert len(seen) == 4  # and forgotten afterwards

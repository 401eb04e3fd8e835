"""Folder hashes are remembered per process, and forgotten when a file changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fusekit.io import hashing


def _folder(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text('{"a": 1}')
    (root / "model.safetensors").write_bytes(b"\0" * 64)
    (root / "README.md").write_text("not hashed")
    return root


def test_a_folder_is_read_once_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "m")
    reads: list[str] = []
    real = hashing.file_hash
    monkeypatch.setattr(hashing, "file_hash", lambda p: reads.append(p.name) or real(p))
    first = hashing.folder_hash(folder)
    assert sorted(reads) == ["config.json", "model.safetensors"]
    assert hashing.folder_hash(folder) == first and len(reads) == 2  # from the memo

    (folder / "README.md").write_text("edited")  # not a model-defining file
    assert hashing.folder_hash(folder) == first and len(reads) == 2

    (folder / "config.json").write_text('{"a": 2}')
    stat = (folder / "config.json").stat()
    os.utime(folder / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = hashing.folder_hash(folder)
    assert changed != first and len(reads) == 4


def test_same_content_same_hash_in_another_folder(tmp_path: Path) -> None:
    assert hashing.folder_hash(_folder(tmp_path / "a")) == hashing.folder_hash(
        _folder(tmp_path / "b")
    )

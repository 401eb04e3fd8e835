"""A full disk or a read-only folder while a run writes: one line naming the output.

Tests run as root (who may write anywhere) on a disk that is not full, so the
faults are injected where the bytes are written: safetensors' own error at the
trained save, ``os.pwrite`` under the shard writer (whose file descriptors give an
``OSError`` with no path), and ``os.open`` of a shard inside the temporary folder.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.pipeline.conftest import cli, recipe_for, write_corpus, write_recipe
from tests.pipeline.test_refusals import snapshot


def _full_at_the_trained_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """What safetensors raises when the disk fills (its Rust core, not an OSError)."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)


def _full_in_the_shard_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    from fusekit.io import writer

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.os, "pwrite", full)


def _read_only_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    from fusekit.io import writer

    real = os.open

    def refuse(path, flags, *args, **kwargs):
        if str(path).endswith(".safetensors") and flags & os.O_WRONLY:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(writer.os, "open", refuse)


CASES = {
    "full disk at the trained save": ("finetune", _full_at_the_trained_save, "no space left"),
    "full disk during surgery": ("depth_upscaling", _full_in_the_shard_writer, "no space left"),
    "read-only folder during surgery": ("block_expansion", _read_only_shard, "read-only"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_failed_write_names_the_output(
    name: str, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strategy, fault, needle = CASES[name]
    data = write_corpus(tmp_path / "c.jsonl")
    recipe = recipe_for(strategy, models, data)
    recipe["train"].update(steps=2, save_steps=100)  # no checkpoint before the final save
    path = write_recipe(tmp_path / "r.yaml", recipe)
    before = snapshot(models["a"], data, path)
    fault(monkeypatch)
    out = tmp_path / "out"
    result = cli("run", str(path), "-o", str(out))
    assert result.code == 2, (result.code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("fusekit: error:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fusekit: error: {out}") and needle in lines[0], lines[0]
    assert "unknown path" not in lines[0] and ".tmp-" not in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))
    assert snapshot(models["a"], data, path) == before

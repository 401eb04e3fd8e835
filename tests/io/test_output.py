"""Atomic output folders: all or nothing, never over an input, overwrite only when asked."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fusekit.errors import OutputExistsError
from fusekit.io.output import atomic_output
from fusekit.surgery.config import load_full_config
from tests.tiny import make_tiny_model

REPO = Path(__file__).resolve().parents[2]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_success_renames_into_place(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "a.txt").write_text("hello")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "hello"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_files_follow_the_umask(tmp_path: Path) -> None:
    """safetensors writes 0600; an output folder is shared like any other folder."""
    import torch
    from safetensors.torch import save_file

    before = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "out") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
            (tmp / "fusekit.json").write_text("{}")
    finally:
        os.umask(before)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes == {"model.safetensors": 0o644, "fusekit.json": 0o644}
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_exception_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyError), atomic_output(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError) as err, atomic_output(out):
        pass
    assert "--overwrite" in str(err.value) and "\n" not in str(err.value)
    assert (out / "old.txt").read_text() == "old"


def test_overwrite_replaces_only_after_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()
        raise RuntimeError("fails half way")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    with atomic_output(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_output_may_not_touch_an_input(tmp_path: Path, where: str) -> None:
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    out = {"same": model, "inside": model / "sub", "contains": tmp_path / "models"}[where]
    with (
        pytest.raises(OutputExistsError) as err,
        atomic_output(out, overwrite=True, inputs=[model]),
    ):
        pass
    assert "input" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["base"]
    assert list(model.iterdir()) == []


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from fusekit.io import writer as writer_mod
    from fusekit.io.output import atomic_output
    from fusekit.strategies.block_expansion.plan import expansion_plan
    from fusekit.strategies.block_expansion.surgery import expand

    original = writer_mod.ShardedWriter._done  # called after every tensor is written
    count = [0]

    def slow_done(self, name):
        original(self, name)
        count[0] += 1
        if count[0] == 5:  # some tensors are on disk, the rest are not
            print("ready", flush=True)
            time.sleep(60)

    writer_mod.ShardedWriter._done = slow_done
    src, out, config = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    with atomic_output(out, inputs=[src]) as tmp:
        plan = expansion_plan(4, 2)
        expand(src, plan, tmp, config=config, max_shard_bytes=20_000, progress=False)
    """
)


def test_sigkill_mid_write_leaves_no_output_and_input_untouched(tmp_path: Path) -> None:
    src = make_tiny_model("llama", tmp_path / "base")
    before = _tree_digest(src)
    # The full config is passed in so that the child imports torch but not transformers.
    config = json.dumps(load_full_config(src))
    out = tmp_path / "expanded"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(src), str(out), config],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".expanded.tmp-")]
        assert temps and any(temps[0].glob("*.safetensors")), "the write must be under way"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()
    assert _tree_digest(src) == before
    # The next run for the same output sweeps the dead process's temporary folder.
    with atomic_output(out) as tmp:
        (tmp / "x").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "expanded"]

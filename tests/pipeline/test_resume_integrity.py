"""Resume never trips on a half-written checkpoint; two runs never share one folder.

A crash (or a full disk) while saving leaves a checkpoint whose files are cut
short.  Resume must skip it, say which and why, and continue from the previous
complete one to the same weights as an uninterrupted run; with no complete
checkpoint it starts over.  While one run holds an output's checkpoints, a second
run of that output is refused with one line and leaves them byte for byte alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fusekit.pipeline.checkpoints import checkpoint_root, lock_file
from fusekit.training.checkpoints import FINGERPRINT_FILE, checkpoint_problem, complete_checkpoints
from tests.pipeline.conftest import fusekit_cli, recipe_for, weights, write_corpus, write_recipe

# api.run with a callback that kills the process once its second checkpoint is complete
# (the pipeline's fingerprint callback runs first), so checkpoint-2 and checkpoint-4 exist.
KILL_AFTER_SECOND_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from transformers import TrainerCallback
    import fusekit.api

    class Kill(TrainerCallback):
        saves = 0

        def on_save(self, args, state, control, **kwargs):
            Kill.saves += 1
            if Kill.saves == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(1)
    fusekit.api.run(sys.argv[1], output=sys.argv[2], callbacks=[Kill()])
    """
)


class Template:
    """One finetune recipe, its uninterrupted output, and the checkpoints of a killed run."""

    def __init__(self, root: Path, models: dict[str, Path]) -> None:
        data = write_corpus(root / "corpus.jsonl")
        self.recipe = write_recipe(root / "recipe.yaml", recipe_for("finetune", models, data))
        self.whole = root / "whole"
        done = fusekit_cli("run", str(self.recipe), "-o", str(self.whole))
        assert done.returncode == 0, done.stderr[-2000:]
        killed = root / "out"
        proc = subprocess.run(
            [sys.executable, "-c", KILL_AFTER_SECOND_CHECKPOINT, str(self.recipe), str(killed)],
            capture_output=True, text=True, timeout=600, check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        self.checkpoints = checkpoint_root(killed)
        self.lock = lock_file(killed)
        assert self.lock.is_file()  # a killed run leaves its (unheld) lock file behind
        found = complete_checkpoints(self.checkpoints / "model")
        assert [p.name for p in found] == ["checkpoint-2", "checkpoint-4"]

    def killed_copy(self, tmp_path: Path) -> Path:
        """``tmp_path/out`` as the killed run left it: checkpoints and lock file beside it."""
        out = tmp_path / "out"
        shutil.copytree(self.checkpoints, checkpoint_root(out))
        shutil.copy(self.lock, lock_file(out))
        return out


@pytest.fixture(scope="module")
def template(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Template:
    return Template(tmp_path_factory.mktemp("resume-integrity"), models)


def _truncate(file: Path) -> None:
    with open(file, "r+b") as fh:
        fh.truncate(file.stat().st_size // 2)


def _corrupt_header(file: Path) -> None:
    with open(file, "r+b") as fh:
        fh.seek(8)  # past the length: the JSON header itself
        fh.write(b"#not json#")


DAMAGE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "truncated-weights": ("model.safetensors", _truncate, "ends past the end of the file"),
    "corrupt-header": ("model.safetensors", _corrupt_header, "the header is not valid JSON"),
    "truncated-optimizer": ("optimizer.pt", _truncate, "optimizer.pt: is empty or cut short"),
}


def _same_weights(a: Path, b: Path) -> None:
    expected, got = weights(a), weights(b)
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    damage: str, template: Template, tmp_path: Path
) -> None:
    file, hurt, why = DAMAGE[damage]
    out = template.killed_copy(tmp_path)
    hurt(checkpoint_root(out) / "model" / "checkpoint-4" / file)
    proc = fusekit_cli("run", str(template.recipe), "-o", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    skipped = [ln for ln in proc.stderr.splitlines() if "skipping checkpoint-4" in ln]
    assert len(skipped) == 1 and why in skipped[0], proc.stderr[-2000:]
    assert "resuming from checkpoint-2 (step 2)" in proc.stderr
    training = json.loads((out / "fusekit.json").read_text())["training"]
    assert (training["resumed_from_step"], training["steps_run"]) == (2, 4)
    _same_weights(template.whole, out)
    # done: the checkpoints and the lock file the killed run left are gone
    assert not checkpoint_root(out).exists() and not lock_file(out).exists()


def test_no_complete_checkpoint_starts_over(template: Template, tmp_path: Path) -> None:
    out = template.killed_copy(tmp_path)
    for step in (2, 4):
        _truncate(checkpoint_root(out) / "model" / f"checkpoint-{step}" / "model.safetensors")
    proc = fusekit_cli("run", str(template.recipe), "-o", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipping checkpoint-2 (" in proc.stderr and "skipping checkpoint-4 (" in proc.stderr
    assert "no checkpoint to resume from; starting at step 0" in proc.stderr
    training = json.loads((out / "fusekit.json").read_text())["training"]
    assert (training["resumed_from_step"], training["steps_run"]) == (None, 6)
    _same_weights(template.whole, out)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("resume", [True, False], ids=["resume", "start-over"])
def test_a_second_run_of_a_locked_output_is_refused_and_touches_nothing(
    resume: bool, template: Template, tmp_path: Path
) -> None:
    out = template.killed_copy(tmp_path)
    before = _hashes(checkpoint_root(out))
    with open(lock_file(out), "a") as held:  # the first run, still training
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        args = ["run", str(template.recipe), "-o", str(out)] + (["--resume"] if resume else [])
        proc = fusekit_cli(*args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("fusekit: error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "another fusekit run is using" in errors[0] and str(out) in errors[0]
        assert "--resume" not in proc.stderr and "checkpoints kept" not in proc.stderr
        assert _hashes(checkpoint_root(out)) == before
        assert lock_file(out).is_file() and not out.exists()


def test_checkpoint_problem_names_the_file_at_fault(template: Template, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-2"
    shutil.copytree(template.checkpoints / "model" / "checkpoint-2", folder)
    assert checkpoint_problem(folder) is None
    (folder / "rng_state.pth").write_bytes(b"")
    assert checkpoint_problem(folder) == "rng_state.pth: is empty or cut short"
    shutil.copy(template.checkpoints / "model" / "checkpoint-4" / "rng_state.pth", folder)
    state = folder / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    assert checkpoint_problem(folder) == "trainer_state.json: is not valid JSON (cut short?)"
    shutil.copy(template.checkpoints / "model" / "checkpoint-2" / "trainer_state.json", folder)
    index = {"weight_map": {"w": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "model-00002-of-00002.safetensors" in str(checkpoint_problem(folder))
    (folder / "model.safetensors.index.json").unlink()
    (folder / FINGERPRINT_FILE).unlink()
    assert f"no {FINGERPRINT_FILE}" in str(checkpoint_problem(folder))

"""Crash and resume through the one pipeline, for every strategy.

A run is killed with SIGKILL right after its first checkpoint is complete; rerun
with ``--resume`` it must say where it continued and end with weights equal, bit
for bit, to an uninterrupted run's.  A checkpoint made with other settings or data
is refused with one line, and nothing is written.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.pipeline.conftest import (
    STRATEGIES,
    fusekit_cli,
    recipe_for,
    weights,
    write_corpus,
    write_recipe,
)

# Runs api.run with one extra callback that kills the process once the first checkpoint
# (its fingerprint included: the pipeline's own callback runs first) is on disk.
KILL_AFTER_FIRST_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from transformers import TrainerCallback
    import fusekit.api

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(1)
    fusekit.api.run(sys.argv[1], output=sys.argv[2], callbacks=[Kill()])
    """
)


def _kill_after_first_checkpoint(recipe: Path, out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_FIRST_CHECKPOINT, str(recipe), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _checkpoints(out: Path) -> Path:
    return out.parent / f".{out.name}.checkpoints"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_killed_run_resumes_to_identical_weights(
    strategy: str, models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = write_recipe(tmp_path / "recipe.yaml", recipe_for(strategy, models, data))
    whole = tmp_path / "whole"
    done = fusekit_cli("run", str(recipe), "-o", str(whole))
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "out"
    _kill_after_first_checkpoint(recipe, out)
    assert not out.exists()  # the atomic output never shows a half-made model
    assert (_checkpoints(out)).is_dir()
    resumed = fusekit_cli("run", str(recipe), "-o", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-2 (step 2)" in resumed.stderr
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["resumed_from_step"] == 2
    assert record["training"]["steps"] == 6
    assert record["training"]["steps_run"] == 4  # it continued; it did not start over
    assert json.loads((whole / "fusekit.json").read_text())["training"]["resumed_from_step"] is None
    # the loss curve covers the whole run, the part before the crash included
    assert [s for s, _ in record["training"]["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    expected, got = weights(whole), weights(out)
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert not _checkpoints(out).exists()  # removed once the output is complete


@pytest.fixture
def killed(models: dict[str, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    """A finetune run killed after its first checkpoint: (recipe, data, out)."""
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = write_recipe(tmp_path / "recipe.yaml", recipe_for("finetune", models, data))
    out = tmp_path / "out"
    _kill_after_first_checkpoint(recipe, out)
    return recipe, data, out


def _refused(proc: subprocess.CompletedProcess, out: Path, *fields: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fusekit: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    for field in fields:
        assert field in lines[0]
    assert not out.exists()


def test_resume_with_another_learning_rate_is_refused(killed) -> None:
    recipe, _, out = killed
    before = sorted(p.name for p in _checkpoints(out).rglob("*"))
    proc = fusekit_cli("run", str(recipe), "-o", str(out), "--resume", "--set", "train.lr=0.02")
    _refused(proc, out, "recipe.train.lr")
    assert sorted(p.name for p in _checkpoints(out).rglob("*")) == before  # left as it was


def test_resume_may_switch_gradient_checkpointing_on(killed) -> None:
    """Out of memory, a user resumes with checkpointing on: the weights' recipe is the same
    (and so is the memory estimate's plan that resume fingerprints, which leaves it out)."""
    recipe, _, out = killed
    proc = fusekit_cli("run", str(recipe), "-o", str(out), "--resume", "--set",
                       "train.gradient_checkpointing=true")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["resumed_from_step"] == 2


def test_resume_with_changed_data_is_refused(killed) -> None:
    recipe, data, out = killed
    write_corpus(data, seed=1)  # same path, other content
    _refused(fusekit_cli("run", str(recipe), "-o", str(out), "--resume"), out, "data.train:corpus")


def test_resume_with_a_changed_plan_is_refused(killed, models: dict[str, Path]) -> None:
    recipe, _, out = killed
    proc = fusekit_cli("run", str(recipe), "-o", str(out), "--resume", "--set",
                       f"model={models['b']}")  # fmt: skip
    _refused(proc, out, "inputs.model")


def test_resume_without_checkpoints_starts_at_step_zero(models, tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = write_recipe(tmp_path / "recipe.yaml", recipe_for("finetune", models, data))
    out = tmp_path / "out"
    proc = fusekit_cli("run", str(recipe), "-o", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no checkpoint to resume from; starting at step 0" in proc.stderr
    assert json.loads((out / "fusekit.json").read_text())["training"]["resumed_from_step"] is None


def test_without_resume_old_checkpoints_are_replaced(killed) -> None:
    recipe, _, out = killed
    proc = fusekit_cli("run", str(recipe), "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "starting over" in proc.stderr
    assert json.loads((out / "fusekit.json").read_text())["training"]["resumed_from_step"] is None


def test_fuse_takes_resume(models, tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    out = tmp_path / "out"
    args = ["fuse", "--strategy", "block_expansion", "--model", str(models["a"]), "--groups", "2",
            "--data", str(data), "--steps", "2", "-o", str(out), "--resume"]  # fmt: skip
    proc = fusekit_cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no checkpoint to resume from" in proc.stderr

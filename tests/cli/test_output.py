"""What a person sees while a run trains: labelled progress lines, no raw Trainer dicts
or per-file bars, ``-q`` for warnings only, ``--log-level`` checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusekit.log import ENV
from fusekit.training.progress import progress_line
from tests.pipeline.conftest import cli, write_corpus
from tests.pipeline.conftest import models as models  # the shared tiny models, a fixture


@pytest.fixture(autouse=True)
def _restore_levels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``-q`` sets the level for the process (and its workers); put it back after each test."""
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv(ENV, "info")
    verbosity = hf_logging.get_verbosity()
    yield
    hf_logging.set_verbosity(verbosity)


def _fuse(models: dict[str, Path], tmp_path: Path, *flags: str) -> tuple[int, str, str]:
    data = write_corpus(tmp_path / "c.jsonl")
    out = cli(*flags, "fuse", "--strategy", "block_expansion", "--model", str(models["a"]),
              "--groups", "2", "--data", str(data), "--steps", "40", "--batch-size", "4",
              "--set", "train.seq_len=16", "--set", "train.log_steps=1",
              "-o", str(tmp_path / "out"))  # fmt: skip
    return out.code, out.stdout, out.stderr


def test_progress_is_one_labelled_line_per_report(models: dict[str, Path], tmp_path: Path) -> None:
    code, stdout, stderr = _fuse(models, tmp_path)
    assert code == 0, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("fusekit: [block_expansion]")]
    steps = [int(line.split("step ")[1].split("/")[0]) for line in lines if " step " in line]
    # 40 reports (every step), rate-limited to one per 5 % of the run, and the last
    assert steps == [*range(1, 40, 2), 40], lines
    assert all("loss " in line and "elapsed" in line for line in lines[:-1])
    assert (
        lines[-1]
        == lines[-1].split(" trained ")[0] + " trained 40 steps in " + (lines[-1].split(" in ")[-1])
    )
    assert "{'loss'" not in stdout + stderr and "'grad_norm'" not in stdout + stderr
    assert "Writing model shards" not in stderr and "Loading weights" not in stderr
    assert "it/s]" not in stderr  # no tqdm bar at all
    assert stdout.splitlines()[0].split() == ["output", str(tmp_path / "out")]
    log = [json.loads(r) for r in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 41))  # every report
    assert {r["unit"] for r in log} == {"block_expansion"}


def test_quiet_keeps_the_summary_and_drops_progress(
    models: dict[str, Path], tmp_path: Path
) -> None:
    code, stdout, stderr = _fuse(models, tmp_path, "-q")
    assert code == 0, stderr
    assert "fusekit: [" not in stderr and "fusekit: wrote" not in stderr, stderr
    assert "final_loss" in stdout


def test_log_level_warning_equals_quiet_and_bad_levels_are_one_line(
    models: dict[str, Path], tmp_path: Path
) -> None:
    code, _, stderr = _fuse(models, tmp_path, "--log-level", "WARNING")
    assert code == 0 and "fusekit: [" not in stderr
    bad = cli("--log-level", "loud", "strategies")
    assert bad.code == 2
    assert bad.stderr.strip() == (
        "fusekit: error: --log-level 'loud': choose one of debug, info, warning, error"
    )


def test_progress_line_format() -> None:
    logs = {"loss": 0.39381, "grad_norm": 1.2149, "learning_rate": 0.002}
    line = progress_line("calm", 150, 1500, logs, elapsed=12.0, done_here=150)
    assert line == (
        "fusekit: [calm] step 150/1500 (10%)  loss 0.3938  grad_norm 1.21  lr 2.00e-03  "
        "12 s elapsed, ~1 min 48 s left"
    )
    last = progress_line("lora", 1500, 1500, {"loss": 0.1}, elapsed=4000.0, done_here=1500)
    assert last == "fusekit: [lora] step 1500/1500 (100%)  loss 0.1000  1 h 06 min elapsed"

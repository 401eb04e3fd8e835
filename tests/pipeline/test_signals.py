"""A run stopped by a signal: one line, no temporary output, checkpoints kept for resume.

SIGTERM is what a scheduler's time limit, Kubernetes and ``docker stop`` send; its
default action ends the process where it stands, leaving ``.OUT.tmp-*`` behind and
saying nothing.  fusekit unwinds from it exactly as from Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pipeline.conftest import recipe_for, write_corpus, write_recipe


@pytest.mark.parametrize(
    ("signum", "status", "line"),
    [
        (signal.SIGTERM, 143, "fusekit: terminated (SIGTERM); nothing was written"),
        (signal.SIGINT, 130, "fusekit: interrupted; nothing was written"),
    ],
)
def test_a_signal_ends_a_run_cleanly(
    signum: int, status: int, line: str, models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "c.jsonl")
    recipe = recipe_for("finetune", models, data)
    recipe["train"].update(steps=100_000, save_steps=2)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    out = tmp_path / "out"
    checkpoints = tmp_path / ".out.checkpoints" / "model"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fusekit", "run", str(path), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/fusekit-fingerprint.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr[-3000:]
    assert "Traceback" not in stderr, stderr
    assert line in stderr.splitlines(), stderr
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*")), "the temporary output was left behind"
    assert list(checkpoints.glob("checkpoint-*")), "checkpoints are kept for --resume"
    assert "rerun with --resume" in stderr

"""bench/extract.py runs on the real Gemma-3 file and reports memory against the logits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]


def test_extract_bench_prints_its_figures(real: dict[str, Path]) -> None:
    out = subprocess.run(
        [sys.executable, "extract.py", "--threads", "1", "--rows", "1", "--length", "32"],
        capture_output=True, text=True, cwd=ROOT / "bench", timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "full fp32 logits of the batch would be" in out.stdout
    assert "x the logits)" in out.stdout and "plain no-grad forward" in out.stdout

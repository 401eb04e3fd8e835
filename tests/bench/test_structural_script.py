"""bench/structural.py runs end to end on a small checkpoint and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_ratios_for_every_method(tmp_path: Path) -> None:
    methods = "copy,copy+fsync,fusekit-dus,fusekit-expand"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "structural.py"), "--size-gb", "0.01",
         "--repeat", "1", "--methods", methods, "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}  # fmt: skip
    assert set(rows) == set(methods.split(","))
    per_byte = float(rows["copy+fsync"].split("|")[5])
    assert per_byte == 1.0  # the baseline's own ratio
    assert "largest tensor" in out.stdout
    assert list(tmp_path.iterdir()) == []  # the work folder is removed

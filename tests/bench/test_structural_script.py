"""bench/structural.py runs end to end on a small checkpoint and prints its table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

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
    written = {m: float(line.split("|")[7]) for m, line in rows.items()}
    # Depth up-scaling writes 1.5x the layer bytes and expansion a quarter more layers.
    assert written["fusekit-dus"] > written["fusekit-expand"] > written["copy"] > 0
    assert "largest tensor" in out.stdout
    assert list(tmp_path.iterdir()) == []  # the work folder is removed


def test_ratios_are_each_row_over_the_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("structural", ROOT / "bench" / "structural.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"wall": 1.0, "rss": 1e6}
    rows = {
        "copy": {**row, "seconds": 1.0, "bytes": 1e9},
        "copy+fsync": {**row, "seconds": 2.0, "bytes": 1e9},
        "fusekit-dus": {**row, "seconds": 3.0, "bytes": 1.5e9},
    }
    bench._print_table(rows, int(1e9), "test", int(1e6))
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in capsys.readouterr().out.splitlines() if line.startswith("| fusekit")}  # fmt: skip
    work, x_copy, x_synced, per_byte = table["fusekit-dus"][:4]
    assert (work, x_copy, x_synced, per_byte) == ("3.00", "3.00", "1.50", "1.00")

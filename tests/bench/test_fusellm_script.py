"""bench/fusellm.py runs end to end at a tiny vocabulary and prints every row it documents.

Timings are printed, never asserted (they depend on the machine); what is checked is
that each row is there and that the bf16 sources' effect on the fused target is
measured on real positions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_every_row_at_a_tiny_vocabulary() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fusellm.py"), "--vocab", "1000", "--chars", "200000"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [
        line for line in out.stdout.splitlines() if line.startswith("| ") and "|---" not in line
    ]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    for wanted in ("vocab map", "DTW", "offline vs plain CLM", "online vs plain CLM",
                   "bf16 sources vs plain CLM", "floor"):  # fmt: skip
        assert any(wanted in name for name in names), wanted
    bf16 = next(row for row in rows if "bf16 sources" in row)
    match = re.search(r"fusion loss ([\d.]+) \(fp32 sources\) vs ([\d.]+) \(bf16\)", bf16)
    assert match and float(match[1]) > 0 and float(match[2]) > 0
    assert re.search(r"differs at [\d.]+% of [\d,]+ positions", bf16)

"""bench/data.py runs end to end on a small corpus and prints its table.

Timings and memory are printed, never asserted (they depend on the machine); what is
checked is that every column is there for every size and that the rerun read the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_a_row_per_corpus_size(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "data.py"), "--sizes-mb", "1,2",
         "--workdir", str(tmp_path), "--procs", "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| corpus | fusekit | cached rerun | datasets.map | time ratio")
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["1 MB", "2 MB"]
    for row in rows[1:]:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert all(c.endswith((" s", " MB", "MB)")) or float(c) > 0 for c in cells), row
    assert out.stderr.count("read from the cache") == 2


def test_the_fusellm_table_builds_then_reads_its_examples(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "data.py"), "--sizes-mb", "0.5",
         "--workdir", str(tmp_path), "--fusellm"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| corpus | FuseLLM examples | cached rerun | peak")
    assert rows[1].split("|")[1].strip().endswith(" MB") and len(rows) == 2
    assert out.stderr.count("fusellm: tokenising") == 1
    assert out.stderr.count("fusellm: tokenised examples read from the cache") == 1

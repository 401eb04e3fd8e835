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


def _table(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    """The script's table rows (header first) and its stderr."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "data.py"), "--workdir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    return [line for line in lines if line.startswith("| ") and "---" not in line], out.stderr


def test_prints_a_row_per_corpus_size(tmp_path: Path) -> None:
    rows, stderr = _table(tmp_path, "--sizes-mb", "1,2", "--procs", "1")
    assert rows[0].startswith("| corpus | fusekit | cached rerun | datasets.map | time ratio")
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["1 MB", "2 MB"]
    for row in rows[1:]:
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert all(c.endswith((" s", " MB", "MB)")) or float(c) > 0 for c in cells), row
    assert stderr.count("read from the cache") == 2


def test_the_fusellm_table_builds_then_reads_its_examples(tmp_path: Path) -> None:
    rows, stderr = _table(tmp_path, "--sizes-mb", "0.5", "--fusellm")
    assert rows[0].startswith("| corpus | FuseLLM examples | cached rerun | peak")
    assert rows[1].split("|")[1].strip().endswith(" MB") and len(rows) == 2
    assert stderr.count("fusellm: tokenising") == 1
    assert stderr.count("fusellm: tokenised examples read from the cache") == 1

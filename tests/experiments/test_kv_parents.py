"""experiments/kv_parents.py scores every model on the four text-style key-value sets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from experiments import kv_parents
from tests.pipeline.conftest import save_llama


def test_prints_a_row_of_four_scores_per_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_llama(tmp_path / "tiny", seed=0, layers=1)
    monkeypatch.setattr(sys, "argv", ["kv_parents.py", str(model), str(model), "--n", "3"])
    kv_parents.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | numeric arithmetic | KV arithmetic, held-out keys")
    rows = [line.split("|")[2:-1] for line in lines[2:]]
    assert len(rows) == 2 and all(0.0 <= float(cell) <= 100.0 for row in rows for cell in row)
    assert all(len(row) == 4 for row in rows)

"""``bench/memory.py`` runs at tiny sizes: each row pairs the dry run's estimate with a
peak measured in a fresh process.  Ratios are printed, never asserted (the tiny models'
peak is the runtime's, and real figures depend on the machine)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "memory.py"


def test_estimate_and_measured_peak_per_strategy(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_memory", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "memory.json"
    rows = module.main(["--models", "tiny", "--strategies", "finetune,calm", "--steps", "1",
                        "--checkpointing", "both", "--json", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == rows
    assert len(rows) == 2 * 2 * 2  # two models, two strategies, checkpointing off and on
    for row in rows:
        assert row["measured"] > 0 and row["estimate"] == row["parts"]["total"] > 0
        assert row["device"] == "cpu" and row["ratio"] > 0
    # checkpointing lowers the estimate's activations for the same recipe
    off, on = (r for r in rows if r["model"] == "a" and r["strategy"] == "finetune")
    assert on["parts"]["activations"] < off["parts"]["activations"]
    assert "| a | finetune | on |" in capsys.readouterr().out

"""The KV-arithmetic experiment driver, end to end at smoke scale (a few steps each)."""

from __future__ import annotations

import json
from pathlib import Path

from fusekit.strategies.calm.experiment import TABLE_TASKS, KVExperiment, main


def test_experiment_trains_scores_probes_and_caches_bases(tmp_path: Path) -> None:
    settings = dict(
        num_keys=30, hidden=16, intermediate=32, heads=2, augment_layers=2, anchor_layers=2,
        augment_steps=4, anchor_steps=4, calm_steps=3, batch_size=8, n_eval=12,
        pairs=[[0, -1], [1, 1]], calm_heads=16,
    )  # fmt: skip
    argv = ["--out", str(tmp_path / "run"), "--bases", str(tmp_path / "bases")]
    argv += [f"--set={k}={json.dumps(v)}" for k, v in settings.items()]
    assert main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    table = results["table"]
    assert {"m_A (augment)", "m_B (anchor)", "CALM", "chance (majority answer)"} <= set(table)
    assert any(name.startswith("LoRA (r=") for name in table)
    assert all(set(row) == set(TABLE_TASKS) for row in table.values())
    assert all(0.0 <= v <= 100.0 for row in table.values() for v in row.values())
    assert [row["layer"] for row in results["probe"]] == [-1, 0, 1]
    assert results["calm"]["pairs"] == [[0, -1], [1, 1]]
    assert (tmp_path / "run" / "calm" / "composition.safetensors").is_file()
    # the augment learnt lookups too, and both bases are cached under their settings
    assert results["settings"]["augment_lookup"] == KVExperiment().augment_lookup > 0
    cached = sorted(p.name for p in (tmp_path / "bases").iterdir())
    assert [name.split("-")[0] for name in cached] == ["anchor", "augment"]
    main([*argv, "--out", str(tmp_path / "again")])
    assert sorted(p.name for p in (tmp_path / "bases").iterdir()) == cached
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["augment"] == results["augment"]  # reused, not retrained

"""``fusekit compare``: runs are cached by recipe hash; the table, JSON and chart are written."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fusekit.comparison.runner import compare


def _spec(tmp_path: Path, model: Path, corpus: Path) -> Path:
    spec = {
        "name": "tiny",
        "output": str(tmp_path / "results"),
        "base": {
            "model": str(model),
            "train": {"data": str(corpus), "steps": 2, "batch_size": 4, "seq_len": 16},
        },
        "parents": [{"name": "base", "model": str(model)}],
        "runs": [{"name": "ft", "recipe": {"strategy": "finetune", "train": {"lr": 5e-2}}}],
        "eval": [str(corpus)],
        "tradeoff": {"reference": "base", "x": "corpus", "y": "corpus"},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_compare_writes_table_and_reuses_runs(
    tiny_llama: Path, corpus: Path, tmp_path: Path
) -> None:
    path = _spec(tmp_path, tiny_llama, corpus)
    parent_files = sorted(p.name for p in tiny_llama.iterdir())
    table = compare(path)
    assert sorted(p.name for p in tiny_llama.iterdir()) == parent_files, "inputs are never written"
    assert table.models() == ["base", "ft"]
    assert table.value("ft", "corpus") != table.value("base", "corpus")
    assert table.best("bpb") in ("base", "ft")
    root = tmp_path / "results"
    for name in ("results.md", "results.json", "results.png"):
        assert (root / name).is_file()
    data = json.loads((root / "results.json").read_text())
    assert {r["model_name"] for r in data["results"]} == {"base", "ft"}
    assert "torch" in data["versions"]
    run_dirs = list((root / "runs").iterdir())
    stamps = {p: (p / "fusekit.json").stat().st_mtime_ns for p in run_dirs}
    again = compare(path)
    assert [(r["model_name"], r["value"]) for r in again.results] == [
        (r["model_name"], r["value"]) for r in table.results
    ]
    assert {p: (p / "fusekit.json").stat().st_mtime_ns for p in run_dirs} == stamps
    assert "| base |" in table.to_markdown() or "base" in table.to_markdown()


def test_loss_panel_reads_every_strategy_training_record() -> None:
    """FuseLLM/finetune report ``training``, CALM ``train``: both curves are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusekit.comparison.plot import _losses
    from fusekit.comparison.runner import ComparisonTable

    curve = [[1, 3.0], [2, 2.5]]
    runs = {
        "a": {"training": {"loss_curve": curve}},
        "b": {"training": {"loss_curve": curve}},
        "c": {"training": None},
    }
    results = [{"model_name": m, "data": "d", "metric": "bpb", "value": 1.0} for m in runs]
    table = ComparisonTable(name="t", results=results, runs=runs)
    fig, ax = plt.subplots()
    _losses(ax, table)
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    plt.close(fig)

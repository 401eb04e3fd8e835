"""``fusekit compare``: runs are cached by recipe hash; the table, JSON and chart are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


def test_compare_without_matplotlib_writes_the_table_and_says_how_to_get_the_chart(
    tiny_llama: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    compare(_spec(tmp_path, tiny_llama, corpus))
    root = tmp_path / "results"
    assert (root / "results.md").is_file() and (root / "results.json").is_file()
    assert not (root / "results.png").exists()
    assert "install matplotlib (fusekit[plot]) for the chart" in capsys.readouterr().err


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


def test_held_out_curves_reach_the_table_and_the_chart(
    tiny_llama: Path, corpus: Path, tmp_path: Path
) -> None:
    """A run with ``train.eval_steps`` (its recipe has data.eval) gets a step-by-step table
    per eval set in results.md and a panel of its own in the chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusekit.comparison.plot import _heldout

    path = _spec(tmp_path, tiny_llama, corpus)
    spec = yaml.safe_load(path.read_text())
    spec["base"]["train"].update(steps=4, eval_steps=2)
    spec["base"]["data"] = {"eval": [str(corpus)]}
    path.write_text(yaml.safe_dump(spec))
    table = compare(path)
    assert table.curves()["corpus"].keys() == {"ft"}  # the parent trains nothing
    steps = [s for s, _ in table.curves()["corpus"]["ft"]]
    assert steps == [0, 2, 4]
    text = (tmp_path / "results" / "results.md").read_text()
    assert "Held-out corpus during training" in text and "| 4 |" in text
    # the curve's last point is the score the comparison gives the saved run
    assert table.curves()["corpus"]["ft"][-1][1] == pytest.approx(table.value("ft", "corpus"))
    run = next(p for p in (tmp_path / "results" / "runs").iterdir() if p.name.startswith("ft-"))
    recorded = json.loads((run / "fusekit.json").read_text())["curve_data"]
    assert [r["path"] for r in recorded.values()] == [str(corpus)]
    fig, ax = plt.subplots()
    _heldout(ax, table)
    assert [line.get_label() for line in ax.get_lines()] == ["ft · corpus"]
    plt.close(fig)


def test_an_edited_input_file_is_trained_and_scored_again(
    tiny_llama: Path, corpus: Path, tmp_path: Path
) -> None:
    """Runs and scores are keyed by the compare file, which names data by path: after the
    training data and the eval file change on disk, the cached run and scores are not
    reused (the run says why), and the run's fusekit.json records the new data."""
    words = corpus.read_text().split()
    lines = [json.dumps({"text": " ".join(words[i : i + 30])}) + "\n" for i in range(0, 3000, 30)]
    data, heldout = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    data.write_text("".join(lines))
    heldout.write_text("".join(lines[:20]))
    path = _spec(tmp_path, tiny_llama, data)
    spec = yaml.safe_load(path.read_text())
    spec["eval"] = [str(heldout)]
    spec.pop("tradeoff")
    path.write_text(yaml.safe_dump(spec))
    first = compare(path)
    run = next((tmp_path / "results" / "runs").iterdir())
    recorded = json.loads((run / "fusekit.json").read_text())["data"]
    data.write_text("".join(reversed(lines)))  # same path, other content
    heldout.write_text("".join(lines[20:30]))
    messages: list[str] = []
    import fusekit.comparison.runner as runner

    original = runner.log.info
    runner.log.info = lambda text, *a, **k: (messages.append(text), original(text, *a, **k))
    try:
        second = compare(path)
    finally:
        runner.log.info = original
    assert any("changed since it ran; running it again" in m and "train.jsonl" in m
               for m in messages), messages  # fmt: skip
    assert json.loads((run / "fusekit.json").read_text())["data"] != recorded
    assert second.value("base", "heldout") != first.value("base", "heldout")
    # nothing changed now: the third compare reuses both
    messages.clear()
    runner.log.info = lambda text, *a, **k: messages.append(text)
    try:
        third = compare(path)
    finally:
        runner.log.info = original
    assert not any("running" in m or "evaluating" in m for m in messages), messages
    assert third.results == second.results


def test_a_replaced_gguf_file_or_curve_set_makes_a_cached_run_stale(tmp_path: Path) -> None:
    """A GGUF conversion stays cached, unchanged, after its ``.gguf`` file is replaced, and
    the evaluation files of a held-out curve shape no weight: both are checked by their
    own content."""
    from fusekit.comparison.runner import _changed_inputs
    from fusekit.io.hashing import data_hash, file_hash, folder_hash

    folder, gguf, heldout = tmp_path / "converted", tmp_path / "m.gguf", tmp_path / "h.jsonl"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    gguf.write_bytes(b"GGUF one")
    heldout.write_text('{"text": "a"}\n')
    meta = {
        "inputs": {"model": {"path": str(folder), "hash": folder_hash(folder),
                             "converted_from": {"gguf_file": str(gguf),
                                                "sha256": file_hash(gguf)}}},
        "curve_data": {"eval:h": {"path": str(heldout), "hash": data_hash(heldout)}},
    }  # fmt: skip
    assert _changed_inputs(meta) == []
    gguf.write_bytes(b"GGUF two")
    assert _changed_inputs(meta) == [f"model ({gguf})"]
    gguf.write_bytes(b"GGUF one")
    heldout.write_text('{"text": "b"}\n')
    assert _changed_inputs(meta) == [f"eval:h ({heldout})"]

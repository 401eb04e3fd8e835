"""The ``calm`` strategy end to end through ``fusekit.api.run``, on tiny bases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusekit.errors import PlanError
from fusekit.strategies.calm.io import load_composed
from tests.calm.conftest import TEXTS


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    train = tmp_path / "train.jsonl"
    evals = tmp_path / "eval.jsonl"
    rows = [{"prompt": t[:10], "completion": t[10:16]} for t in TEXTS]
    train.write_text("\n".join(json.dumps(r) for r in rows * 4))
    evals.write_text("\n".join(json.dumps(r) for r in rows[:3]))
    return train, evals


def _recipe(bases: dict[str, Path], data: tuple[Path, Path], **extra) -> dict:
    train, evals = data
    return {
        "strategy": "calm",
        "anchor": str(bases["anchor"]),
        "augment": [str(bases["augment"])],
        "every": 4,
        "data": {"train": str(train), "eval": [str(evals)]},
        "train": {"steps": 2, "lr": 1e-2, "batch_size": 4, "seq_len": 32, "log_steps": 1},
        **extra,
    }


def test_run_trains_saves_and_scores(
    bases: dict[str, Path], data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fusekit.api import run

    out = tmp_path / "out"
    recipe = _recipe(bases, data, baselines=["lora", "encoder", "random_augment"])
    monkeypatch.chdir(bases["anchor"].parent)
    recipe["anchor"] = bases["anchor"].name  # relative to the folder the run starts in
    summary = run(recipe, output=out)
    assert (out / "composition.safetensors").is_file() and (out / "composition.json").is_file()
    assert not any(
        p.name.endswith(".safetensors") and p.name != "composition.safetensors"
        for p in out.iterdir()
    )  # no copy of a base
    table = summary.details["eval"]["eval"]
    assert set(table) >= {"calm", "anchor", "augment_0", "lora", "encoder", "random_augment"}
    assert all(0.0 <= v <= 1.0 for v in table.values())
    # chance = share of the most common answer in the set
    answers = [json.loads(line)["completion"].strip() for line in data[1].read_text().splitlines()]
    assert table["chance"] == max(answers.count(a) for a in answers) / len(answers)
    # the paper's table layout: one row per evaluation set, one column per model
    header, _rule, row = summary.tables.splitlines()
    assert header.split(" | ")[1:4] == ["anchor", "augment_0", "calm"] and row.startswith(
        "| eval |"
    )
    # the composition's own scores are the run's evaluation (not computed twice)
    assert [r["value"] for r in summary.evaluation] == [table["calm"]]
    assert [r["model_name"] for r in summary.evaluation] == ["out"]  # the output, not its tmp
    lora = summary.details["lora"]
    assert abs(lora["lora_parameters"] - lora["budget"]) / lora["budget"] < 0.05
    assert summary.training is not None and summary.training.steps == 2
    assert set(summary.baselines) == {"lora", "encoder", "random_augment"}
    adapter = json.loads((out / "baselines" / "lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(bases["anchor"].resolve())  # from anywhere
    assert load_composed(out) is not None


def test_steps_zero_builds_the_untrained_composition(bases, data, tmp_path: Path) -> None:
    from fusekit.api import run

    recipe = _recipe(bases, data)
    recipe["train"]["steps"] = 0
    run(recipe, output=tmp_path / "out")
    model = load_composed(tmp_path / "out")
    assert all(
        float(b.o_proj.weight.detach().abs().max()) == 0.0
        for bl in model.composition.blocks
        for b in bl
    )


def test_plan_without_weights(bases, data) -> None:
    from fusekit.api import plan

    p = plan(_recipe(bases, data))
    assert p["pairs"] == [[[3, 0], [7, 2]]] and p["composition_parameters"] > 0


def test_anchor_mix_adds_the_anchor_task_with_its_own_table() -> None:
    from types import SimpleNamespace

    from fusekit.recipe.common import ScratchSpec
    from fusekit.strategies.calm.strategy import mix_anchor_task

    spec = ScratchSpec(task="numeric_arithmetic", tokenizer="kv", kv={"value_max": 3})
    recipe = SimpleNamespace(anchor_mix=0.25, anchor=SimpleNamespace(from_scratch=spec))
    records = [{"prompt": f"k{i} =", "completion": " 1"} for i in range(30)]
    mixed = mix_anchor_task(recipe, records, seed=0)
    extra = [r for r in mixed if r not in records]
    assert len(mixed) == 40 and len(extra) == 10  # 25 % of the result
    operands = [t for r in extra for t in r["prompt"].split() if t.isdigit()]
    assert operands and max(int(t) for t in operands) <= 3  # the anchor's value range
    recipe.anchor = SimpleNamespace(path="/somewhere")
    with pytest.raises(PlanError, match="anchor_mix needs examples of the anchor's own domain"):
        mix_anchor_task(recipe, records, seed=0)


def test_anchor_mix_draws_a_pretrained_anchors_text_from_anchor_data(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from fusekit.recipe.common import FileData
    from fusekit.strategies.calm.strategy import mix_anchor_task

    texts = tmp_path / "english.jsonl"
    texts.write_text("".join(json.dumps({"text": f"plain english {i}."}) + "\n" for i in range(50)))
    recipe = SimpleNamespace(anchor_mix=0.2, anchor=SimpleNamespace(path="/pretrained"),
                             anchor_data=FileData(path=str(texts)))  # fmt: skip
    records = [{"prompt": f"def f{i}():", "completion": " pass"} for i in range(40)]

    def share(mixed: list[dict[str, str]]) -> float:
        english = sum(len(r["text"]) for r in mixed if "text" in r)
        return english / sum(len(v) for r in mixed for v in r.values())

    mixed = mix_anchor_task(recipe, records, seed=0)
    extra = [r for r in mixed if "text" in r]
    # 20 % of the characters (what trains once text is cut into blocks), not of the
    # records: at most one record past it, and no repeats while the file lasts.
    assert 0.2 <= share(mixed) < 0.23
    assert len(extra) == len({r["text"] for r in extra}) < 0.25 * len(records)
    assert mixed == mix_anchor_task(recipe, records, seed=0)  # seeded
    recipe.anchor_mix = 0.9  # more than the file holds: drawn with replacement
    again = mix_anchor_task(recipe, records, seed=0)
    assert 0.9 <= share(again) < 0.91 and sum("text" in r for r in again) > 50


def test_anchor_mix_counts_a_long_document_by_its_length(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from fusekit.recipe.common import FileData
    from fusekit.strategies.calm.strategy import mix_anchor_task

    texts = tmp_path / "english.jsonl"
    texts.write_text("".join(json.dumps({"text": "word " * 400}) + "\n" for _ in range(5)))
    recipe = SimpleNamespace(anchor_mix=0.2, anchor=SimpleNamespace(path="/pretrained"),
                             anchor_data=FileData(path=str(texts)))  # fmt: skip
    records = [{"text": "x = 1\n" * 100} for _ in range(40)]  # 24,000 characters
    extra = [r for r in mix_anchor_task(recipe, records, seed=0) if r["text"].startswith("word")]
    assert len(extra) == 3  # 6,000 characters wanted: three 2,000-character documents


def test_anchor_data_is_checked_hashed_and_needs_anchor_mix(bases, data, tmp_path: Path) -> None:
    from fusekit.pipeline.run import data_files as _data_files
    from fusekit.recipe.loading import parse_recipe

    texts = tmp_path / "english.jsonl"
    texts.write_text(json.dumps({"text": "plain english."}) + "\n")
    recipe = {**_recipe(bases, data), "anchor_mix": 0.2, "anchor_data": {"path": str(texts)}}
    loaded = parse_recipe(recipe)
    assert str(texts) in {str(p) for p in _data_files(loaded).values()}
    with pytest.raises(Exception, match="anchor_data is only read with anchor_mix > 0"):
        parse_recipe({**recipe, "anchor_mix": 0.0})


def test_table_one_names_rows_as_the_paper_does() -> None:
    from fusekit.strategies.calm.strategy import paper_label, table_one

    assert paper_label("kv_arithmetic:held_out:heldout") == "KV-arithmetic, held-out keys"
    assert paper_label("kv_arithmetic:held_in:heldout") == "KV-arithmetic, held-in keys"
    assert paper_label("kv_substitution:heldout") == "KV-substitution"
    assert paper_label("numeric_arithmetic:heldout") == "Numeric-arithmetic"
    assert (
        paper_label("my_notes") == "my_notes"
        and paper_label("english:heldout") == "english:heldout"
    )
    table = table_one({"kv_substitution:heldout": {"calm": 0.5}})
    assert table.splitlines()[2] == "| KV-substitution | 50.0 |"


def test_compare_scores_a_runs_lora_baseline_beside_it(
    bases: dict[str, Path], data, tmp_path: Path
) -> None:
    """The control the composition is judged against is in the comparison table."""
    import yaml

    from fusekit.comparison.recipe import load_compare
    from fusekit.comparison.runner import compare
    from fusekit.evaluation.sets import evaluate_sets

    recipe = _recipe(bases, data, baselines=["lora", "encoder"])
    evals = recipe["data"].pop("eval")
    spec = {"name": "calm", "output": str(tmp_path / "cmp"), "base": recipe,
            "parents": [{"name": "anchor", "model": str(bases["anchor"])}],
            "runs": [{"name": "calm", "recipe": {}}], "eval": evals}  # fmt: skip
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(spec))
    table = compare(path)
    assert table.models() == ["anchor", "calm", "calm · lora"]  # encoder: scored in the run
    lora = Path(table.runs["calm · lora"]["path"])
    assert lora.name == "lora" and table.runs["calm · lora"]["kind"] == "baseline"
    assert table.runs["calm · lora"]["training"]["steps"] == 2
    direct = evaluate_sets(lora, load_compare(path).eval)[0]["value"]
    assert table.value("calm · lora", "eval") == direct
    assert "calm · lora" in (tmp_path / "cmp" / "results.md").read_text()

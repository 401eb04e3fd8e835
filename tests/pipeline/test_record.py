"""``fusekit.json`` has one shape for every strategy, and ``run`` returns it typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusekit.api import run
from fusekit.result import RunResult
from tests.pipeline.conftest import STRATEGIES, recipe_for, write_corpus

TOP_LEVEL = {
    "created", "strategy", "recipe", "plan", "inputs", "data", "curve_data", "training", "baselines",
    "evaluation", "tables", "details", "versions", "seconds",
}  # fmt: skip


@pytest.fixture(scope="module")
def records(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("records")
    data = write_corpus(root / "corpus.jsonl")
    heldout = write_corpus(root / "heldout.jsonl", seed=5)
    found = {}
    for strategy in STRATEGIES:
        recipe = recipe_for(strategy, models, data)
        recipe["train"]["steps"] = 2
        recipe.setdefault("data", {})["eval"] = [str(heldout)]
        result = run(recipe, output=root / strategy)
        found[strategy] = (result, json.loads((root / strategy / "fusekit.json").read_text()))
    return found


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_record_has_the_same_top_level_shape(records: dict, strategy: str) -> None:
    result, record = records[strategy]
    keys = set(record) - {"trainable_layers"}  # block expansion also names its new layers
    assert keys == TOP_LEVEL
    assert isinstance(result, RunResult) and result.strategy == record["strategy"]
    assert all(v["hash"].startswith("sha256:") for v in record["inputs"].values())
    assert record["data"]["train:corpus"]["hash"].startswith("sha256:")
    assert record["training"]["steps"] == 2 and record["training"]["world_size"] == 1
    assert set(record["versions"]) >= {"fusekit", "torch", "transformers"}
    # the evaluation inside a run is labelled with the output's name, not the temporary one
    assert [e["model_name"] for e in record["evaluation"]] == [strategy]
    assert ".tmp-" not in json.dumps(record["evaluation"])


def test_the_recipe_in_the_record_runs_again(records: dict, tmp_path: Path) -> None:
    _, record = records["finetune"]
    again = run(record["recipe"], output=tmp_path / "again")
    assert again.training is not None and again.training.steps == 2

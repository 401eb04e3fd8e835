"""``train.eval_steps``: held-out scores along the run, without changing what trains.

Every strategy's main unit is scored on the recipe's eval sets before the first step
and every ``eval_steps`` steps; the weights at the end are bit-identical to a run
without the curve, the last point is the score of the saved output, the first the
score of the untrained model, and a resumed run keeps the points measured before it
was killed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fusekit.api import evaluate, run
from tests.pipeline.conftest import (
    STRATEGIES,
    fusekit_cli,
    recipe_for,
    weights,
    write_corpus,
    write_recipe,
)
from tests.pipeline.test_resume import _kill_after_first_checkpoint


def _scored(strategy: str, models: dict[str, Path], tmp: Path, **train: Any) -> dict[str, Any]:
    data = write_corpus(tmp / "corpus.jsonl")
    heldout = write_corpus(tmp / "heldout.jsonl", seed=7)
    recipe = recipe_for(strategy, models, data)
    recipe["train"].update(train)
    recipe["data"] = {**recipe.get("data", {}), "eval": [str(heldout)]}
    return recipe


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_curve_changes_no_weight_and_ends_at_the_outputs_score(
    strategy: str, models: dict[str, Path], tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    plain = run(_scored(strategy, models, tmp_path), output=tmp_path / "plain")
    curved = run(_scored(strategy, models, tmp_path, eval_steps=4), output=tmp_path / "curved")
    assert plain is not None and curved is not None
    assert plain.training is not None and curved.training is not None
    assert plain.training.eval_curve == []
    curve = curved.training.eval_curve
    assert [p["step"] for p in curve] == [0, 4, 6]  # before training, every 4th, the last
    assert all(set(p) == {"step", "heldout"} for p in curve)
    final = {r["data"]: r["value"] for r in curved.evaluation}
    assert curve[-1]["heldout"] == pytest.approx(final["heldout"], rel=1e-5)
    assert curve[0]["heldout"] != pytest.approx(curve[-1]["heldout"], rel=1e-3)
    expected, got = weights(tmp_path / "plain"), weights(tmp_path / "curved")
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    # the loss curves match step for step: scoring consumed no random number
    assert curved.training.loss_curve == plain.training.loss_curve


def test_the_first_point_is_the_untrained_model(models: dict[str, Path], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    recipe = _scored("finetune", models, tmp_path, eval_steps=3)
    result = run(recipe, output=tmp_path / "out")
    assert result is not None and result.training is not None
    untrained = evaluate(models["a"], tmp_path / "heldout.jsonl", "bpb", progress=False)
    assert result.training.eval_curve[0]["heldout"] == pytest.approx(untrained["value"], rel=1e-5)


def test_a_resumed_run_keeps_the_points_before_the_crash(
    models: dict[str, Path], tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", _scored("finetune", models, tmp_path, eval_steps=1))
    whole = tmp_path / "whole"
    assert fusekit_cli("run", str(recipe), "-o", str(whole)).returncode == 0
    out = tmp_path / "out"
    _kill_after_first_checkpoint(recipe, out)  # after step 2's checkpoint
    resumed = fusekit_cli("run", str(recipe), "-o", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "held-out at step 3" in resumed.stderr and "held-out at step 1" not in resumed.stderr
    got = json.loads((out / "fusekit.json").read_text())["training"]
    expected = json.loads((whole / "fusekit.json").read_text())["training"]
    assert got["resumed_from_step"] == 2
    assert [p["step"] for p in got["eval_curve"]] == list(range(7))
    assert got["eval_curve"] == expected["eval_curve"]


def test_scoring_draws_no_random_number_that_training_would_draw() -> None:
    """A scorer that samples (a generation metric with sampling, a shuffled subset) must
    not shift the random numbers dropout and data order draw next."""
    from transformers import TrainerState

    from fusekit.training.curve import curve_callback

    callback = curve_callback(lambda model: {"set": float(torch.rand(1))}, 2, "t")
    state = TrainerState(global_step=0, max_steps=4)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    callback.on_train_begin(None, state, None, model=None)
    state.global_step = 1
    callback.on_step_end(None, state, None, model=None)  # not a scoring step
    state.global_step = 2
    callback.on_step_end(None, state, None, model=None)
    assert torch.equal(torch.rand(3), expected)
    assert [row["step"] for row in state.log_history] == [0, 2]

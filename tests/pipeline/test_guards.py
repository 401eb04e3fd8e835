"""Numerical guards and movable CALM outputs, through the public API and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.pipeline.conftest import cli, recipe_for, write_corpus


def _poison_step(step: int):
    """A callback that makes one step's gradient NaN while its loss stays finite."""
    from transformers import TrainerCallback

    class Poison(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            param = next(p for p in model.parameters() if p.requires_grad)
            param.register_hook(lambda g: g * float("nan") if state.global_step + 1 == step else g)

    return Poison()


def _finetune(models, tmp_path: Path, **train) -> dict:
    recipe = recipe_for("finetune", models, write_corpus(tmp_path / "corpus.jsonl"))
    recipe["train"].update(train)
    return recipe


def test_a_nan_gradient_stops_the_run_naming_the_step(models, tmp_path: Path) -> None:
    import fusekit
    from fusekit.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"gradient became non-finite.* at step 3"):
        fusekit.run(
            _finetune(models, tmp_path), output=tmp_path / "out", callbacks=[_poison_step(3)]
        )
    assert not (tmp_path / "out").exists()


def test_skip_nonfinite_drops_the_step_and_counts_it(models, tmp_path: Path) -> None:
    import torch

    import fusekit
    from tests.pipeline.conftest import weights

    result = fusekit.run(
        _finetune(models, tmp_path, skip_nonfinite=True),
        output=tmp_path / "out",
        callbacks=[_poison_step(3)],
    )
    assert result.training.skipped_nonfinite_steps == 1
    assert result.training.steps == 6
    record = json.loads((tmp_path / "out" / "fusekit.json").read_text())
    assert record["training"]["skipped_nonfinite_steps"] == 1
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "out").values())


def test_a_moved_project_still_loads_and_base_repoints(models, tmp_path: Path) -> None:
    """Outputs record bases relative to themselves; ``--base`` re-points a moved one."""
    project = tmp_path / "project"
    (project / "bases").mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copytree(models[name], project / "bases" / name)
    recipe = recipe_for("calm", {k: project / "bases" / k for k in ("a", "b")},
                        write_corpus(project / "corpus.jsonl"))  # fmt: skip
    recipe["train"]["steps"] = 0
    import fusekit

    fusekit.run(recipe, output=project / "calm")
    doc = json.loads((project / "calm" / "composition.json").read_text())
    assert doc["anchor"]["relative"] == "../bases/a"

    moved = tmp_path / "moved"
    shutil.move(str(project), str(moved))  # the recorded absolute paths are gone now
    data = str(moved / "corpus.jsonl")
    ok = cli("eval", str(moved / "calm"), "--data", data)
    assert ok.code == 0, ok.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(moved / "bases" / "a"), str(elsewhere))
    lost = cli("eval", str(moved / "calm"), "--data", data)
    assert lost.code == 2 and "--base anchor=DIR" in lost.stderr
    found = cli("eval", str(moved / "calm"), "--data", data, "--base", f"anchor={elsewhere}")
    assert found.code == 0, found.stderr[-2000:]
    assert json.loads((moved / "calm" / "composition.json").read_text()) == doc  # untouched


def test_steps_zero_needs_no_data_for_a_surgery(models, tmp_path: Path) -> None:
    out = tmp_path / "solar"
    done = cli("fuse", "--strategy", "depth_upscaling", "--model", str(models["a"]),
               "--remove", "1", "--steps", "0", "-o", str(out))  # fmt: skip
    assert done.code == 0, done.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
    refused = cli("fuse", "--strategy", "depth_upscaling", "--model", str(models["a"]),
                  "--remove", "1", "--steps", "5", "-o", str(tmp_path / "x"))  # fmt: skip
    assert refused.code == 2 and "--data" in refused.stderr


def test_fusellm_summary_shows_the_alignment(models, tmp_path: Path) -> None:
    from tests.pipeline.conftest import write_recipe

    recipe = recipe_for("fusellm", models, write_corpus(tmp_path / "corpus.jsonl"))
    recipe["train"]["steps"] = 2
    done = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(tmp_path / "o"))
    assert done.code == 0, done.stderr[-2000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("source_0_alignment"))
    assert "% positions aligned" in line and "% exact" in line and "% unmapped" in line

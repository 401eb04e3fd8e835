"""train.streaming through the pipeline: every strategy that streams trains on a stream,
and a stream resumed after a crash gives the uninterrupted run's weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.pipeline.conftest import cli, fusekit_cli, recipe_for, weights, write_recipe
from tests.pipeline.test_resume import _kill_after_first_checkpoint
from tests.training.conftest import WORDS


def _small_corpus(path: Path) -> Path:
    """Eight documents: a few 16-token blocks, so six steps of four read several passes."""
    rows = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(10)) for i in range(8)]
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    return path


def _streamed(strategy: str, models: dict[str, Path], tmp_path: Path, **train: Any) -> Path:
    recipe = recipe_for(strategy, models, _small_corpus(tmp_path / "corpus.jsonl"))
    recipe["train"].update(streaming=True, shuffle_buffer=3, **train)
    return write_recipe(tmp_path / "recipe.yaml", recipe)


@pytest.mark.parametrize("strategy", ["finetune", "block_expansion", "depth_upscaling"])
def test_the_strategies_that_stream_train_on_a_stream(
    strategy: str, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "cache"))
    recipe = _streamed(strategy, models, tmp_path)
    result = cli("run", str(recipe), "-o", str(tmp_path / "out"))
    assert result.code == 0, result.stderr[-3000:]
    training = json.loads((tmp_path / "out" / "fusekit.json").read_text())["training"]
    assert training["steps"] == 6 and training["examples"] == 0  # a stream has no length
    assert not (tmp_path / "cache" / "data").exists()  # no Arrow cache was made


def test_a_killed_stream_resumes_to_identical_weights(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """The crash comes at step 3, in the corpus's second pass (two batches a pass)."""
    recipe = _streamed("finetune", models, tmp_path, save_steps=3)
    whole = tmp_path / "whole"
    done = fusekit_cli("run", str(recipe), "-o", str(whole))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "streamed, shuffled within 3 examples" in done.stderr
    out = tmp_path / "out"
    _kill_after_first_checkpoint(recipe, out)
    resumed = fusekit_cli("run", str(recipe), "-o", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-3 (step 3)" in resumed.stderr
    expected, got = weights(whole), weights(out)
    assert expected and expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_two_ranks_split_one_stream_between_them(models: dict[str, Path], tmp_path: Path) -> None:
    """Rank 0 reads each batch for both ranks and hands each its half: two ranks of 4
    train as one process with batches of 8 (up to the order of float sums), which two
    ranks each reading the stream whole would not.  Examples of every length (blocks and
    completions) make batches of different widths, which the ranks must still join."""
    from tests.pipeline.test_distributed import two_cpu_ranks

    if shutil.which("accelerate") is None:
        pytest.skip("accelerate launcher not on PATH")
    config = two_cpu_ranks(tmp_path / "two.yaml")
    corpus = _small_corpus(tmp_path / "mixed.jsonl")
    pairs = [{"prompt": " ".join(WORDS[: 2 + i % 5]), "completion": " " + WORDS[i % len(WORDS)]}
             for i in range(12)]  # fmt: skip
    corpus.write_text(corpus.read_text() + "".join(json.dumps(p) + "\n" for p in pairs))
    two = _streamed("finetune", models, tmp_path, save_steps=100, data=str(corpus))
    proc = fusekit_cli("run", str(two), "-o", str(tmp_path / "two"), "--accelerate-config",
                       str(config))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-12000:]
    record = json.loads((tmp_path / "two" / "fusekit.json").read_text())["training"]
    assert record["world_size"] == 2 and record["steps"] == 6
    one = _streamed("finetune", models, tmp_path, save_steps=100, batch_size=8, data=str(corpus))
    assert fusekit_cli("run", str(one), "-o", str(tmp_path / "one")).returncode == 0
    expected, got = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-5), name

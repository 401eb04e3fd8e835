"""``fusekit fuse`` flags, ``eval --json``, ``validate`` and ``--overwrite`` succeed as a
user types them: a fresh process each, checked by exit code, files written and what the
flags set in the record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipeline.conftest import fusekit_cli, write_corpus
from tests.pipeline.conftest import models as models  # the shared tiny models, a fixture


def _ok(*args: str) -> str:
    done = fusekit_cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.stdout


def _record(out: Path) -> dict:
    return json.loads((out / "fusekit.json").read_text())


def _layers(out: Path) -> int:
    return json.loads((out / "config.json").read_text())["num_hidden_layers"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("flags") / "corpus.jsonl")


def test_depth_upscaling_slices_without_data(models: dict[str, Path], tmp_path: Path) -> None:
    """``--slices`` splices the given ranges; ``--steps 0`` needs no data (surgery only)."""
    out = tmp_path / "dus"
    stdout = _ok("fuse", "--strategy", "depth_upscaling", "--model", str(models["a"]),
                 "--slices", "0:3,1:4", "--steps", "0", "-o", str(out))  # fmt: skip
    assert _layers(out) == 6 and "a[0:3] + a[1:4]" in stdout
    assert _record(out)["training"] is None  # nothing trained


def test_block_expansion_blocks_per_group(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pro"
    _ok("fuse", "--strategy", "block_expansion", "--model", str(models["a"]),
        "--groups", "2", "--blocks-per-group", "2", "-o", str(out))  # fmt: skip
    assert _layers(out) == 4 + 2 * 2
    assert _record(out)["details"]["trainable_layers"] == [2, 3, 6, 7]


def test_fusellm_lambda_fusion_align(models: dict[str, Path], corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "fused"
    _ok("fuse", "--strategy", "fusellm", "--target", str(models["a"]), "--source",
        str(models["b"]), "--data", str(corpus), "--steps", "2", "--batch-size", "4",
        "--lambda", "0.7", "--fusion", "avgce", "--align", "mined",
        "--set", "train.seq_len=16", "-o", str(out))  # fmt: skip
    recipe = _record(out)["recipe"]
    assert (recipe["lambda"], recipe["fusion"], recipe["align"]) == (0.7, "avgce", "mined")
    assert _record(out)["training"]["steps"] == 2


def test_overwrite_eval_json_and_validate(
    models: dict[str, Path], corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dus"
    args = ("fuse", "--strategy", "depth_upscaling", "--model", str(models["a"]),
            "--remove", "1", "-o", str(out))  # fmt: skip
    _ok(*args)
    again = fusekit_cli(*args)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    _ok(*args, "--overwrite")

    result = tmp_path / "eval.json"
    printed = _ok("eval", str(out), "--data", str(corpus), "--json", str(result))
    written = json.loads(result.read_text())
    assert written["metric"] == "bpb" and written["model_name"] == "dus"
    assert f"{written['value']:.4f}" in printed

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"strategy: depth_upscaling\nmodel: {models['a']}\nremove: 1\n")
    assert _ok("validate", str(recipe)).strip() == f"ok: {recipe} (depth_upscaling)"

    # a layer range past the model's layers is found by validate, not first by run
    beyond = tmp_path / "beyond.yaml"
    beyond.write_text(f"strategy: depth_upscaling\nslices: ['0:3', '1:9']\n"
                      f"model: {models['a']}\n")  # fmt: skip
    res = fusekit_cli("validate", str(beyond))
    assert res.returncode == 2 and "a layer_range reaches layer 8" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1

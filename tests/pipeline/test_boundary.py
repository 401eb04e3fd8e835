"""One boundary for every command: the same broken model folders, walked through every
command and API that loads a model, give the same one line.

Training has made the validation pass since it was written; ``eval``, ``compare``
and the Python loaders (``load_composed``, the lm-eval adapter's ``load_model``)
used to go straight to transformers and safetensors, so a truncated shard was a
safetensors traceback there and a tokenizer past the embedding an ``IndexError``
half-way through scoring.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import cli, recipe_for, write_corpus, write_recipe
from tests.pipeline.test_refusals import snapshot


def _truncate(folder: Path) -> None:
    file = folder / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])


def _bad_header(folder: Path) -> None:
    file = folder / "model.safetensors"
    raw = bytearray(file.read_bytes())
    raw[8] = ord("x")
    file.write_bytes(bytes(raw))


def _small_embedding(folder: Path) -> None:
    """The config says 10 rows: the tokenizer's ids past them would index out of range."""
    import torch
    from safetensors.torch import load_file, save_file

    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] = 10
    (folder / "config.json").write_text(json.dumps(cfg))
    state = load_file(folder / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = torch.ones(10, state[name].shape[1])
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


BROKEN: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "truncated shard": (_truncate, ("model.safetensors", "past the end of the file")),
    "corrupt header": (_bad_header, ("model.safetensors", "not valid JSON")),
    "embedding smaller than the tokenizer": (_small_embedding, ("20 tokens", "10 rows")),
}


def _eval(tmp: Path, folder: Path, models: dict[str, Path]) -> list[str]:
    return ["eval", str(folder), "--data", str(write_corpus(tmp / "h.jsonl"))]


def _run(tmp: Path, folder: Path, models: dict[str, Path]) -> list[str]:
    data = write_corpus(tmp / "c.jsonl")
    recipe = write_recipe(tmp / "r.yaml", recipe_for("finetune", {**models, "a": folder}, data))
    return ["run", str(recipe), "-o", str(tmp / "out")]


def _fuse(tmp: Path, folder: Path, models: dict[str, Path]) -> list[str]:
    return ["fuse", "--strategy", "depth_upscaling", "--model", str(folder), "--remove", "1",
            "-o", str(tmp / "out")]  # fmt: skip


def _compare(tmp: Path, folder: Path, models: dict[str, Path]) -> list[str]:
    """A compare file whose parent (scored, never trained) is the broken folder."""
    data = write_corpus(tmp / "c.jsonl")
    spec = {
        "name": "broken-parent",
        "output": str(tmp / "out"),
        "base": {"model": str(models["a"]), "train": {"data": str(data), "steps": 1,
                                                      "batch_size": 2, "seq_len": 16}},
        "parents": [{"name": "base", "model": str(folder)}],
        "runs": [{"name": "ft", "recipe": {"strategy": "finetune"}}],
        "eval": [str(data)],
    }  # fmt: skip
    (tmp / "compare.yaml").write_text(yaml.safe_dump(spec))
    return ["compare", str(tmp / "compare.yaml")]


def _validate(tmp: Path, folder: Path, models: dict[str, Path]) -> list[str]:
    return ["validate", _run(tmp, folder, models)[1]]


COMMANDS = {"eval": _eval, "run": _run, "fuse": _fuse, "compare": _compare, "validate": _validate}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("broken", list(BROKEN))
def test_every_command_refuses_a_broken_model_in_one_line(
    command: str, broken: str, models: dict[str, Path], tmp_path: Path
) -> None:
    mutate, needles = BROKEN[broken]
    folder = Path(shutil.copytree(models["a"], tmp_path / "model"))
    mutate(folder)
    argv = COMMANDS[command](tmp_path, folder, models)
    before = snapshot(folder)
    result = cli(*argv)
    assert result.code == 2, (result.code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("fusekit: error:")]
    assert len(lines) == 1, result.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert str(folder) in lines[0] or folder.name in lines[0]
    assert not (tmp_path / "out").exists() or command == "compare"
    assert snapshot(folder) == before


@pytest.mark.parametrize("broken", list(BROKEN))
def test_python_loaders_make_the_same_pass(
    broken: str, models: dict[str, Path], tmp_path: Path
) -> None:
    """``load_composed`` (hashes unchecked, so only the pass stands between the broken
    anchor and transformers) and the harness's ``load_model`` behind the lm-eval adapter."""
    from fusekit.api import load_composed
    from fusekit.errors import ModelIOError
    from fusekit.evaluation.harness import load_model

    data = write_corpus(tmp_path / "c.jsonl")
    recipe = recipe_for("calm", models, data)
    recipe["train"]["steps"] = 0
    assert cli("run", str(write_recipe(tmp_path / "calm.yaml", recipe)), "-o",
               str(tmp_path / "calm")).code == 0  # fmt: skip
    mutate, needles = BROKEN[broken]
    folder = Path(shutil.copytree(models["a"], tmp_path / "anchor"))
    mutate(folder)
    with pytest.raises(ModelIOError) as composed:
        load_composed(tmp_path / "calm", bases={"anchor": folder}, check_hashes=False)
    with pytest.raises(ModelIOError) as loaded:
        load_model(folder)
    for exc in (composed.value, loaded.value):
        assert all(n in str(exc) for n in needles), str(exc)


def test_a_dangling_link_in_a_model_folder_is_no_traceback(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """A half-finished download leaves links to nowhere; the pass's memo must stat them
    without following (it used to raise FileNotFoundError, an internal error)."""
    folder = Path(shutil.copytree(models["a"], tmp_path / "model"))
    (folder / "README.md").symlink_to(tmp_path / "nowhere")
    result = cli(*_eval(tmp_path, folder, models))
    assert result.code == 0, result.stderr[-3000:]

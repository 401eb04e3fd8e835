"""Loading local folders: one-line errors for every way a folder can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusekit.errors import ModelIOError
from fusekit.io.folders import check_model_folder
from fusekit.io.loading import load_causal_lm, load_tokenizer
from tests.tiny import make_tiny_model


def _folder(tmp_path: Path, *files: str, config: bool = True) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    if config:
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for name in files:
        (folder / name).write_bytes(b"")
    return folder


def _one_line(err: pytest.ExceptionInfo[ModelIOError]) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError) as err:
        check_model_folder(tmp_path / "nope")
    assert "does not exist" in _one_line(err)


def test_no_config(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError) as err:
        check_model_folder(_folder(tmp_path, "model.safetensors", config=False))
    assert "config.json" in _one_line(err)


def test_pickled_only_refused_unless_allowed(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "pytorch_model.bin")
    with pytest.raises(ModelIOError) as err:
        check_model_folder(folder)
    msg = _one_line(err)
    assert "only pickled weights (pytorch_model.bin)" in msg and "allow_pickle: true" in msg
    assert check_model_folder(folder, allow_pickle=True) == folder


def test_no_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError) as err:
        check_model_folder(_folder(tmp_path, "README.md"))
    assert "no weights" in _one_line(err)


def test_index_naming_a_missing_shard(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}  # fmt: skip
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelIOError) as err:
        check_model_folder(folder)
    assert "model-00002-of-00002.safetensors" in _one_line(err)


def test_load_model_and_tokenizer(tmp_path: Path) -> None:
    folder = make_tiny_model("qwen3", tmp_path / "q")
    model = load_causal_lm(folder)
    assert not model.training and model.config.model_type == "qwen3"
    tok = load_tokenizer(folder)
    assert tok("the fox").input_ids


def test_tokenizer_missing(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "model.safetensors")
    with pytest.raises(ModelIOError) as err:
        load_tokenizer(folder)
    assert "no tokenizer files" in _one_line(err)


def test_load_errors_are_model_io_errors(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(ModelIOError) as err:
        load_causal_lm(folder)
    _one_line(err)

"""``allow_pickle`` and ``trust_remote_code`` reach every load of every strategy."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from fusekit.api import run
from fusekit.errors import FusekitError
from tests.pipeline.conftest import STRATEGIES, fusekit_cli, recipe_for, weights, write_corpus

_MODEL_KEYS = ("model", "anchor", "target")


def _with_model(strategy: str, models: dict, folder: Path, data: Path, steps: int, **opts) -> dict:
    """``strategy``'s recipe with ``folder`` (and its loading options) as the main model."""
    recipe = recipe_for(strategy, {**models, "a": folder}, data)
    recipe["train"]["steps"] = steps
    for key in _MODEL_KEYS:
        if key in recipe:
            recipe[key] = {"path": str(folder), **opts}
    return recipe


def _pickled_recipe(strategy: str, models: dict, pickled: Path, data: Path, allow: bool) -> dict:
    return _with_model(strategy, models, pickled, data, 2, allow_pickle=allow)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_allow_pickle_loads_a_bin_model(
    strategy: str, models: dict, pickled: Path, tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    with pytest.raises(FusekitError, match="allow_pickle: true"):
        run(_pickled_recipe(strategy, models, pickled, data, False), output=tmp_path / "no")
    assert not (tmp_path / "no").exists()
    result = run(_pickled_recipe(strategy, models, pickled, data, True), output=tmp_path / "out")
    assert result.training is not None and result.training.steps == 2
    assert weights(tmp_path / "out")
    # the same model from safetensors gives the same output: the conversion is exact
    same = run(recipe_for(strategy, models, data) | {"train": {**_pickled_recipe(
        strategy, models, pickled, data, True)["train"]}}, output=tmp_path / "ref")  # fmt: skip
    assert same.training is not None
    ref, got = weights(tmp_path / "ref"), weights(tmp_path / "out")
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


# A config and model class shipped in the folder (auto_map): transformers imports this
# code only with trust_remote_code.  It marks itself so the test can see that it ran.
_CONFIG = """
from transformers import LlamaConfig

class ToyConfig(LlamaConfig):
    model_type = "toy_llama"
"""
_MODEL = """
from transformers import LlamaForCausalLM
from .configuration_toy import ToyConfig

class ToyForCausalLM(LlamaForCausalLM):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.ran_remote_code = True
"""


@pytest.fixture(scope="module")
def remote_code(models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("remote") / "toy"
    shutil.copytree(models["a"], folder)
    (folder / "configuration_toy.py").write_text(textwrap.dedent(_CONFIG))
    (folder / "modeling_toy.py").write_text(textwrap.dedent(_MODEL))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "toy_llama"
    config["auto_map"] = {"AutoConfig": "configuration_toy.ToyConfig",
                          "AutoModelForCausalLM": "modeling_toy.ToyForCausalLM"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("strategy", ["finetune", "calm", "fusellm"])
def test_local_model_code_runs_only_with_trust_remote_code(
    strategy: str, models: dict, remote_code: Path, tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")

    def recipe(trust: bool) -> dict:
        return _with_model(strategy, models, remote_code, data, 1, trust_remote_code=trust)

    with pytest.raises(FusekitError, match="trust_remote_code"):
        run(recipe(False), output=tmp_path / "no")
    assert not (tmp_path / "no").exists()
    assert run(recipe(True), output=tmp_path / "yes").training is not None


def test_eval_takes_the_loading_options(pickled: Path, tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "heldout.jsonl")
    refused = fusekit_cli("eval", str(pickled), "--data", str(data))
    assert refused.returncode == 2 and "allow_pickle" in refused.stderr
    done = fusekit_cli("eval", str(pickled), "--data", str(data), "--allow-pickle")
    assert done.returncode == 0, done.stderr[-2000:]

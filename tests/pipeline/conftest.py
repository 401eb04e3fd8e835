"""Two tiny Llamas sharing a word-level tokenizer, a corpus, and one recipe per strategy.

Every strategy's recipe trains a few steps with a checkpoint every two, so the
pipeline's resume, fingerprint and multi-process paths can be driven through
``fusekit run`` exactly as a user would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.training.conftest import WORDS, make_tokenizer

STRATEGIES = ("finetune", "finetune_lora", "block_expansion", "depth_upscaling", "calm", "fusellm")


def save_llama(folder: Path, seed: int, layers: int = 4) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline-models")
    return {"a": save_llama(root / "a", seed=0), "b": save_llama(root / "b", seed=1)}


def write_corpus(path: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(64)]
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    return path


def recipe_for(strategy: str, models: dict[str, Path], data: Path) -> dict[str, Any]:
    """A recipe of ``strategy`` (``finetune_lora``: finetune with LoRA) that checkpoints often."""
    train = {"data": str(data), "steps": 6, "save_steps": 2, "lr": 1e-2, "batch_size": 4,
             "seq_len": 16, "log_steps": 1, "schedule": "linear"}  # fmt: skip
    a, b = str(models["a"]), str(models["b"])
    recipes: dict[str, dict[str, Any]] = {
        "finetune": {"strategy": "finetune", "model": a},
        "finetune_lora": {"strategy": "finetune", "model": a, "lora": {"r": 4}},
        "block_expansion": {"strategy": "block_expansion", "model": a, "groups": 2},
        "depth_upscaling": {"strategy": "depth_upscaling", "model": a, "remove": 1},
        "calm": {"strategy": "calm", "anchor": a, "augment": [b], "every": 2},
        "fusellm": {"strategy": "fusellm", "target": a, "sources": [b], "lambda": 0.5},
    }
    if strategy == "calm":  # CALM names its composition set D_C under data.train
        return {**recipes[strategy], "data": {"train": train.pop("data")}, "train": train}
    return {**recipes[strategy], "train": train}


def write_recipe(path: Path, recipe: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def fusekit_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``fusekit ARGS`` in a fresh process on one thread (bit-identical across runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "fusekit", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False,
    )  # fmt: skip


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def cli(*args: str) -> Outcome:
    """``fusekit ARGS`` in this process: the console script's own ``main``."""
    from fusekit.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["fusekit", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue())


def weights(folder: Path) -> dict[str, Any]:
    """Every tensor of an output: a model's shards, or CALM's composition."""
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update({f"{file.name}:{k}": v for k, v in load_file(file).items()})
    return tensors


@pytest.fixture(scope="session")
def pickled(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model ``a`` with its weights as ``pytorch_model.bin`` only."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("pickled") / "a-bin"
    shutil.copytree(models["a"], folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder

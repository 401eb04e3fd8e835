"""The finetune baseline through the public API: full and merged-LoRA outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fusekit


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
def test_finetune_writes_a_plain_hf_folder(
    tiny_llama: Path, corpus: Path, tmp_path: Path, lora: dict | None
) -> None:
    recipe = {
        "strategy": "finetune",
        "model": str(tiny_llama),
        "train": {"steps": 2, "lr": 1e-2, "batch_size": 4, "seq_len": 16, "data": str(corpus)},
    }
    if lora:
        recipe["lora"] = lora
    out = tmp_path / "out"
    summary = fusekit.run(recipe, output=out)
    assert summary.training is not None and summary.training.steps == 2
    base, tuned = load_file(tiny_llama / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(base) == set(tuned), "LoRA must be merged away: same tensor names as the base"
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    if lora:  # only linear layers carry adapters: embeddings and norms stay bit-identical
        assert torch.equal(base["model.embed_tokens.weight"], tuned["model.embed_tokens.weight"])
    meta = json.loads((out / "fusekit.json").read_text())
    assert meta["strategy"] == "finetune" and (out / "README.md").is_file()
    assert not list(tmp_path.glob(".out*")), "no temporary folder left beside the output"

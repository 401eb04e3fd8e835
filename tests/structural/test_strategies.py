"""The two strategies through fusekit's recipe and run() API: outputs, provenance, plan, training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from fusekit.api import plan as api_plan
from fusekit.api import run
from fusekit.io.arch import arch_facts
from fusekit.io.lazy import LazyCheckpoint
from fusekit.io.loading import load_causal_lm
from fusekit.strategies.block_expansion.freeze import new_layer_param_filter, trainable_layers


def test_block_expansion_run_writes_a_complete_folder(
    tiny: Callable[..., Path], tmp_path: Path
) -> None:
    base = tiny("qwen3")
    out = tmp_path / "out"
    recipe = {"strategy": "block_expansion", "model": str(base), "groups": 2}
    result = run(recipe, output=out)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
            "fusekit.json", "README.md"} <= names  # fmt: skip
    record = json.loads((out / "fusekit.json").read_text())
    assert record["trainable_layers"] == [2, 5] == trainable_layers(out)
    assert record["inputs"]["model"]["hash"].startswith("sha256:")
    assert result.details["layers_after"] == 6
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert front["tags"] == ["fusekit", "block_expansion"]
    model = load_causal_lm(out)
    is_new = new_layer_param_filter(out)
    new = {n for n, _ in model.named_parameters() if is_new(n)}
    assert new and all(".layers.2." in n or ".layers.5." in n for n in new)


def test_plan_matches_what_run_writes(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("gemma2")
    recipe = {"strategy": "depth_upscaling", "model": str(base), "slices": ["0:3", "1:4"]}
    plan = api_plan(recipe)
    assert json.loads(json.dumps(plan)) == plan
    assert not (tmp_path / "out").exists()
    assert plan["layers_after"] == 6 and plan["layer_map"].endswith(
        "[0:3] + " + base.name + "[1:4]"
    )
    run(recipe, output=tmp_path / "out")
    ckpt = LazyCheckpoint(tmp_path / "out")
    assert plan["disk_bytes"] == sum(ckpt.nbytes(n) for n in ckpt)
    assert plan["peak_memory_bytes"] == min(max(ckpt.nbytes(n) for n in ckpt), 8 << 20)
    model = load_causal_lm(tmp_path / "out")
    assert plan["parameters_after"] == sum(p.numel() for p in model.parameters())
    base_params = sum(p.numel() for p in load_causal_lm(base).parameters())
    assert plan["parameters_before"] == {str(base): base_params}


def test_solar_remove_via_run(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("phi")
    result = run({"strategy": "depth_upscaling", "model": str(base), "remove": 1},
                 output=tmp_path / "out")  # fmt: skip
    assert result.details["layer_map"] == f"{base.name}[0:3] + {base.name}[1:4]"
    assert load_causal_lm(tmp_path / "out").config.num_hidden_layers == 6


def test_training_after_expansion_touches_only_new_layers(
    tiny: Callable[..., Path], tmp_path: Path
) -> None:
    base = tiny("llama")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"the fox {i} jumps over the dog"}) + "\n"
                            for i in range(32)))  # fmt: skip
    recipe = {
        "strategy": "block_expansion",
        "model": str(base),
        "groups": 2,
        "train": {"data": {"path": str(data)}, "steps": 2, "lr": 1e-2, "batch_size": 4,
                  "seq_len": 16},
    }  # fmt: skip
    out = tmp_path / "out"
    result = run(recipe, output=out)
    assert result.training is not None and result.training.steps == 2
    assert not (out / ".checkpoints").exists()
    facts = arch_facts(json.loads((base / "config.json").read_text()))
    src, got = LazyCheckpoint(base), LazyCheckpoint(out)
    sources = [0, 1, 1, 2, 3, 3]
    changed = set()
    for name in got:
        parsed = facts.layer_index(name)
        ref = name if parsed is None else facts.layer_name(sources[parsed[0]], parsed[1])
        if not torch.equal(got.get_tensor(name), src.get_tensor(ref)):
            assert parsed is not None and parsed[0] in (2, 5), f"{name} changed"
            changed.add(parsed[0])
    assert changed == {2, 5}


@pytest.mark.parametrize("zero", ["auto", "output_proj"])
def test_recipe_zero_field_reaches_surgery(
    zero: str, tiny: Callable[..., Path], tmp_path: Path
) -> None:
    base = tiny("olmo2")
    plan = api_plan({"strategy": "block_expansion", "model": str(base), "positions": [1],
                     "zero": zero})  # fmt: skip
    assert plan["zero"] == ("post_norm" if zero == "auto" else "output_proj")
    assert plan["new_layers"] == [2]


def test_zeroed_post_norm_gains_train_at_their_own_learning_rate(
    tiny: Callable[..., Path], tmp_path: Path
) -> None:
    """A zero gain also zeroes every other gradient of its copy; at the run's lr the gains
    barely move, at ``gain_lr_scale`` x lr they do (Adam moves a weight ~lr per step)."""
    base = tiny("gemma3_text")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"the fox {i} jumps over the dog"}) + "\n"
                            for i in range(32)))  # fmt: skip
    facts = arch_facts(json.loads((base / "config.json").read_text()))
    moved = {}
    for scale in (1.0, 100.0):
        out = tmp_path / f"out-{scale}"
        run({"strategy": "block_expansion", "model": str(base), "positions": [1],
             "gain_lr_scale": scale,
             "train": {"data": {"path": str(data)}, "steps": 2, "lr": 1e-4, "batch_size": 4,
                       "seq_len": 16, "warmup_steps": 0}}, output=out)  # fmt: skip
        got = LazyCheckpoint(out)
        gains = [facts.layer_name(2, g) for g in facts.post_norm_gains]
        moved[scale] = max(float((got.get_tensor(g) + 1.0).abs().max()) for g in gains)
    assert 0 < moved[1.0] < 3e-4 and moved[100.0] > 30 * moved[1.0], moved

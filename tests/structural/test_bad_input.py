"""Bad input: one-line fusekit errors, and nothing written — by the functions or the strategies."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fusekit.errors import FusekitError, PlanError, UnsupportedArchitectureError
from fusekit.recipe import parse_recipe
from fusekit.strategies.block_expansion.plan import expansion_plan
from fusekit.strategies.block_expansion.strategy import BlockExpansionStrategy
from fusekit.strategies.block_expansion.surgery import expand
from fusekit.strategies.depth_upscaling.plan import slices_plan
from fusekit.strategies.depth_upscaling.splice import splice


def _fails(exc_type: type[FusekitError], match: str, fn: Callable[[], object], out: Path) -> None:
    with pytest.raises(exc_type) as err:
        fn()
    assert match in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists()
    if out.parent.exists():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_range_outside_model(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("llama")
    layers = slices_plan("0:3,2:6", base)
    out = tmp_path / "out"
    call = lambda: splice({str(base): base}, layers, out, base=str(base))  # noqa: E731
    _fails(PlanError, "reaches layer 5", call, out)


def test_slices_of_different_widths(tiny: Callable[..., Path], tmp_path: Path) -> None:
    a = tiny("llama")
    b = tiny("llama", config_overrides={"intermediate_size": 96})
    layers = slices_plan("0:2", a) + slices_plan("2:4", b)
    out = tmp_path / "out"
    call = lambda: splice({str(a): a, str(b): b}, layers, out, base=str(a))  # noqa: E731
    _fails(PlanError, "intermediate_size=96", call, out)


def test_slices_of_different_architectures(tiny: Callable[..., Path], tmp_path: Path) -> None:
    a, b = tiny("llama"), tiny("mistral")
    layers = slices_plan("0:2", a) + slices_plan("2:4", b)
    out = tmp_path / "out"
    call = lambda: splice({str(a): a, str(b): b}, layers, out, base=str(a))  # noqa: E731
    _fails(PlanError, "one architecture", call, out)


def test_unsupported_architecture(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    config = {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 8,
              "num_attention_heads": 2, "intermediate_size": 8, "vocab_size": 10}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"bert.encoder.layer.0.x": torch.ones(2)}, str(folder / "model.safetensors"))
    out = tmp_path / "out"
    call = lambda: expand(folder, expansion_plan(2, 1), out)  # noqa: E731
    _fails(UnsupportedArchitectureError, "'bert' is not supported", call, out)


def test_gpt2_inverse_layer_scaling(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("gpt2", config_overrides={"scale_attn_by_inverse_layer_idx": True})
    out = tmp_path / "out"
    call = lambda: expand(base, expansion_plan(4, 2), out)  # noqa: E731
    _fails(UnsupportedArchitectureError, "scale_attn_by_inverse_layer_idx", call, out)


def test_post_norm_mode_on_pre_norm_model(tiny: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    call = lambda: expand(tiny("llama"), expansion_plan(4, 2), out, zero="post_norm")  # noqa: E731
    _fails(UnsupportedArchitectureError, "post-norm", call, out)


def _run(recipe: dict, out: Path) -> None:
    from fusekit.api import run

    run(recipe, output=out)


def test_strategy_groups_not_dividing(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("qwen3")
    recipe = {"strategy": "block_expansion", "model": str(base), "groups": 3}
    out = tmp_path / "out"
    strategy = BlockExpansionStrategy(parse_recipe(recipe))
    _fails(PlanError, "does not divide", strategy.plan, out)
    _fails(PlanError, "does not divide", lambda: _run(recipe, out), out)


def test_strategy_dus_range_outside(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("gemma2")
    recipe = {"strategy": "depth_upscaling", "model": str(base), "slices": ["2:7"]}
    out = tmp_path / "out"
    _fails(PlanError, "reaches layer 6", lambda: _run(recipe, out), out)


def test_strategy_gpt2_refused(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("gpt2", config_overrides={"scale_attn_by_inverse_layer_idx": True})
    recipe = {"strategy": "block_expansion", "model": str(base), "groups": 2}
    out = tmp_path / "out"
    _fails(UnsupportedArchitectureError, "cannot be exact", lambda: _run(recipe, out), out)

"""``bench/gpu.py`` is run on a GPU machine only when one is lent, in one short call:
it must work the first time. Here it runs on the CPU at tiny shapes; its ratios are
printed and written, never asserted against a threshold (timings and peaks depend on
the machine), but the decoding check must hold and every strategy must have a figure."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_on_the_cpu_and_writes_every_ratio(
    gpu_bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu.json"
    figures = gpu_bench.main(["--device", "cpu", "--size", "tiny", "--dtype", "float32",
                              "--json", str(out)])  # fmt: skip
    assert json.loads(out.read_text()) == figures
    for key in ("calm_decode_ratio", "calm_step_ratio", "fusellm_step_ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["calm_cached_equals_uncached"] is True
    strategies = ("finetune", "lora", "block_expansion", "depth_upscaling", "calm", "fusellm")
    assert tuple(figures["memory"]) == strategies
    for strategy, row in figures["memory"].items():
        assert row["estimate"] > 0 and row["measured"] > 0, strategy
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, strategy
    printed = capsys.readouterr().out
    assert "CALM decode" in printed and "FuseLLM online step" in printed
    assert "cached == uncached" in printed
    assert all(f"| {strategy} |" in printed for strategy in strategies)


def test_real_shapes_are_the_published_models(gpu_bench) -> None:
    gemma, smol = gpu_bench.configs("real")
    assert (gemma.model_type, gemma.num_hidden_layers, gemma.vocab_size) == (
        "gemma3_text",
        18,
        262144,
    )
    assert (smol.model_type, smol.num_hidden_layers, smol.hidden_size) == ("llama", 30, 576)
    assert "sliding_attention" in gemma.layer_types

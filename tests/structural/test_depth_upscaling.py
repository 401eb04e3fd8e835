"""Depth up-scaling copies source layers bit for bit and yields a working, cacheable model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fusekit.io.arch import arch_facts
from fusekit.io.lazy import LazyCheckpoint
from fusekit.io.loading import load_causal_lm
from fusekit.strategies.depth_upscaling.plan import slices_plan, solar_plan
from fusekit.strategies.depth_upscaling.splice import splice
from fusekit.surgery.config import load_full_config
from tests.structural.helpers import cached_logits, greedy, token_ids, uncached_logits
from tests.tiny import ARCHS


def _assert_bit_identical(
    out: Path, layers: list[Any], folders: dict[str, Path], base: str
) -> None:
    result = LazyCheckpoint(out)
    sources = {k: LazyCheckpoint(f) for k, f in folders.items()}
    facts = arch_facts(result.config)
    seen = set()
    for name in result:
        parsed = facts.layer_index(name)
        if parsed is None:
            expected = sources[base].get_tensor(name)
        else:
            i, suffix = parsed
            src = layers[i]
            expected = sources[src.model].get_tensor(facts.layer_name(src.layer, suffix))
        got = result.get_tensor(name)
        assert got.dtype == expected.dtype and torch.equal(got, expected), name
        seen.add(name)
    # every tensor of every named source layer made it across
    for i, src in enumerate(layers):
        for name in sources[src.model]:
            parsed = facts.layer_index(name)
            if parsed and parsed[0] == src.layer:
                assert facts.layer_name(i, parsed[1]) in seen


@pytest.fixture(scope="module", params=ARCHS)
def solar(request: pytest.FixtureRequest, tiny: Callable[..., Path], tmp_path_factory) -> Any:
    base = tiny(request.param)
    key = str(base)
    layers = solar_plan(4, 1, key)
    out = tmp_path_factory.mktemp(f"dus-{request.param}") / "out"
    summary = splice({key: base}, layers, out, base=key, progress=False)
    return base, out, layers, summary


def test_tensors_bit_identical_to_named_layers(solar: Any) -> None:
    base, out, layers, summary = solar
    assert summary["layer_map"] == f"{base.name}[0:3] + {base.name}[1:4]"
    _assert_bit_identical(out, layers, {str(base): base}, str(base))


def test_config_and_cached_generation(solar: Any) -> None:
    base, out, layers, _ = solar
    old, new = load_full_config(base), load_full_config(out)
    facts = arch_facts(new)
    assert facts.num_layers(new) == 6
    if "layer_types" in old:
        assert new["layer_types"] == [old["layer_types"][s.layer] for s in layers]
    model = load_causal_lm(out)
    ids = token_ids(batch=1, length=5, seed=2)
    with_cache, without = greedy(model, ids), greedy(model, ids, use_cache=False)
    assert torch.equal(with_cache.sequences, without.sequences)
    ids = token_ids()
    torch.testing.assert_close(cached_logits(model, ids), uncached_logits(model, ids),
                               atol=1e-4, rtol=1e-4)  # fmt: skip


def test_slices_from_two_models(tiny: Callable[..., Path], tmp_path: Path) -> None:
    a, b = tiny("qwen3", seed=0), tiny("qwen3", seed=1)
    slices = {
        "slices": [
            {"sources": [{"model": str(a), "layer_range": [0, 3]}]},
            {"sources": [{"model": str(b), "layer_range": [2, 4]}]},
        ]
    }
    layers = slices_plan(slices, None)
    folders = {str(a): a, str(b): b}
    splice(folders, layers, tmp_path / "out", base=str(a), progress=False)
    _assert_bit_identical(tmp_path / "out", layers, folders, str(a))
    model = load_causal_lm(tmp_path / "out")
    assert torch.isfinite(uncached_logits(model, token_ids())).all()


def test_dtype_cast_and_shards(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("gpt2")
    layers = slices_plan("0:4,2:4", base)
    summary = splice({str(base): base}, layers, tmp_path / "out", base=str(base),
                     dtype="bfloat16", max_shard_bytes=50_000, progress=False)  # fmt: skip
    assert len(summary["shards"]) > 1 and (tmp_path / "out/model.safetensors.index.json").exists()
    model = load_causal_lm(tmp_path / "out")
    assert model.dtype == torch.bfloat16 and model.config.n_layer == 6
    src, out = LazyCheckpoint(base), LazyCheckpoint(tmp_path / "out")
    name = "transformer.h.4.mlp.c_fc.weight"
    assert torch.equal(out.get_tensor(name), src.get_tensor(name.replace(".4.", ".2.")).bfloat16())

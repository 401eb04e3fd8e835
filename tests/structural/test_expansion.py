"""Block expansion is an exact identity — without cache, with cache, in generate() — and
training touches only the new layers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fusekit.io.arch import arch_facts
from fusekit.io.lazy import LazyCheckpoint
from fusekit.io.loading import load_causal_lm
from fusekit.io.provenance import write_provenance
from fusekit.strategies.block_expansion.freeze import new_layer_param_filter, trainable_layers
from fusekit.strategies.block_expansion.plan import expansion_plan
from fusekit.strategies.block_expansion.surgery import expand
from fusekit.surgery.config import load_full_config
from tests.structural.helpers import (
    cached_logits,
    greedy,
    own_memory,
    token_ids,
    uncached_logits,
)
from tests.tiny import ARCHS, EXTRA_ARCHS

PLAN = expansion_plan(4, 2)  # copies of layers 1 and 3 at new indices 2 and 5


class Expanded:
    def __init__(self, base: Path, out: Path, summary: dict[str, Any]) -> None:
        self.base_dir, self.out_dir, self.summary = base, out, summary
        self.base = load_causal_lm(base)
        self.model = load_causal_lm(out)


@pytest.fixture(scope="module", params=ARCHS)
def expanded(
    request: pytest.FixtureRequest, tiny: Callable[..., Path], tmp_path_factory
) -> Expanded:
    arch = request.param
    base = tiny(arch)
    out = tmp_path_factory.mktemp(f"expanded-{arch}") / "out"
    summary = expand(base, PLAN, out, progress=False)
    write_provenance(out, strategy="block_expansion", recipe={}, plan={}, inputs={},
                     summary={"trainable_layers": list(PLAN.new_layers)})  # fmt: skip
    return Expanded(base, out, summary)


def test_loads_with_new_depth(expanded: Expanded) -> None:
    facts = arch_facts(expanded.model.config)
    assert facts.num_layers(expanded.model.config) == 6
    assert expanded.summary["layers_after"] == 6
    n_params = sum(p.numel() for p in expanded.model.parameters())
    assert expanded.summary["parameters_after"] == n_params


def test_identity_without_cache(expanded: Expanded) -> None:
    ids = token_ids()
    delta = uncached_logits(expanded.model, ids) - uncached_logits(expanded.base, ids)
    assert delta.abs().max().item() == 0.0


def test_identity_with_cache(expanded: Expanded) -> None:
    ids = token_ids()
    delta = cached_logits(expanded.model, ids) - cached_logits(expanded.base, ids)
    assert delta.abs().max().item() == 0.0


def test_identity_in_generate(expanded: Expanded) -> None:
    # Two prompts, not one.  generate() projects only the last position; at batch 1 that
    # is a matrix-vector product, and with transformers 5.24 on CPU its rounding differed
    # by ~1e-7 between the base and the expansion although their final hidden states and
    # output weights are bit-identical.  Two rows take the matrix-product path the other
    # identity tests use.
    ids = token_ids(batch=2, length=5, seed=1)
    a, b = greedy(expanded.model, ids), greedy(expanded.base, ids)
    assert torch.equal(a.sequences, b.sequences)
    for la, lb in zip(a.logits, b.logits, strict=True):
        assert (la - lb).abs().max().item() == 0.0


def test_per_layer_config_follows_plan(expanded: Expanded) -> None:
    old = load_full_config(expanded.base_dir)
    new = load_full_config(expanded.out_dir)
    if "layer_types" in old:
        assert new["layer_types"] == [old["layer_types"][s] for s in PLAN.sources]
    attn = [
        getattr(layer, "self_attn", getattr(layer, "attn", None))
        for layer in _layers(expanded.model)
    ]
    assert [a.layer_idx for a in attn] == list(range(6))


def _layers(model: Any) -> Any:
    return model.model.layers if hasattr(model, "model") else model.transformer.h


def test_tied_head_is_not_written(expanded: Expanded) -> None:
    ckpt = LazyCheckpoint(expanded.out_dir)
    if expanded.model.config.tie_word_embeddings:
        assert "lm_head.weight" not in ckpt
        emb = expanded.model.get_input_embeddings().weight
        assert expanded.model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    else:
        assert "lm_head.weight" in ckpt


def test_original_layers_are_bit_identical(expanded: Expanded) -> None:
    facts = arch_facts(expanded.model.config)
    src, out = LazyCheckpoint(expanded.base_dir), LazyCheckpoint(expanded.out_dir)
    zeroed = 0
    for name in out:
        parsed = facts.layer_index(name)
        if parsed is None:
            assert torch.equal(out.get_tensor(name), src.get_tensor(name)), name
            continue
        i, suffix = parsed
        original = src.get_tensor(facts.layer_name(PLAN.sources[i], suffix))
        if i in PLAN.new_layers and not torch.equal(out.get_tensor(name), original):
            zeroed += 1
        else:
            assert torch.equal(out.get_tensor(name), original), name
    assert zeroed == len(PLAN.new_layers) * len(expanded.summary["zeroed_in_each_copy"])


def test_adamw_step_changes_only_new_layers(expanded: Expanded) -> None:
    model = load_causal_lm(expanded.out_dir)
    assert trainable_layers(expanded.out_dir) == list(PLAN.new_layers)
    is_new = new_layer_param_filter(expanded.out_dir)
    facts = arch_facts(model.config)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_new(name))
        if param.requires_grad:
            trainable.append(param)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optim = torch.optim.AdamW(trainable, lr=1e-2)
    ids = token_ids()
    model(ids, labels=ids).loss.backward()
    optim.step()
    model.eval()
    changed_layers = set()
    for name, value in model.state_dict().items():
        if torch.equal(value, before[name]):
            continue
        parsed = facts.layer_index(name)
        assert parsed is not None and parsed[0] in PLAN.new_layers, f"{name} changed"
        changed_layers.add(parsed[0])
    assert changed_layers == set(PLAN.new_layers)
    logits = uncached_logits(model, ids)
    assert torch.isfinite(logits).all()
    assert (logits - uncached_logits(expanded.base, ids)).abs().max() > 0, "the step mattered"


@pytest.mark.parametrize("arch", EXTRA_ARCHS)
def test_identity_on_other_families(arch: str, tiny: Callable[..., Path], tmp_path: Path) -> None:
    """MoE (per-expert and shared-expert down projections), Phi-3, Gemma 3, OLMo 2."""
    base = tiny(arch)
    expand(base, PLAN, tmp_path / "out", progress=False)
    ids = token_ids()
    a, b = own_memory(load_causal_lm(tmp_path / "out")), own_memory(load_causal_lm(base))
    assert (uncached_logits(a, ids) - uncached_logits(b, ids)).abs().max().item() == 0.0
    assert (cached_logits(a, ids) - cached_logits(b, ids)).abs().max().item() == 0.0


@pytest.mark.parametrize("zero", ["output_proj", "post_norm"])
def test_both_zero_modes_on_post_norm_family(
    zero: str, tiny: Callable[..., Path], tmp_path: Path
) -> None:
    base = tiny("gemma2")
    summary = expand(base, PLAN, tmp_path / "out", zero=zero, progress=False)
    assert summary["zero"] == zero
    ids = token_ids()
    a, b = load_causal_lm(tmp_path / "out"), load_causal_lm(base)
    assert (uncached_logits(a, ids) - uncached_logits(b, ids)).abs().max().item() == 0.0


def test_sharded_bf16_output(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("llama")
    summary = expand(base, PLAN, tmp_path / "out", dtype="bfloat16", max_shard_bytes=30_000,
                     progress=False)  # fmt: skip
    assert len(summary["shards"]) > 1
    model = load_causal_lm(tmp_path / "out")
    assert model.dtype == torch.bfloat16
    ref = load_causal_lm(base, dtype=torch.bfloat16)
    ids = token_ids()
    assert (uncached_logits(model, ids) - uncached_logits(ref, ids)).abs().max().item() == 0.0

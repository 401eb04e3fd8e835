"""The composed model: identity at init, causality, padding, frozen bases, architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from fusekit.io.kv_cache import cache_kwargs
from fusekit.strategies.calm.build import compose_from_paths
from fusekit.strategies.calm.masks import positions_from_mask
from tests.calm.conftest import quick_train, random_ids


@pytest.fixture(scope="module")
def trained(bases: dict[str, Path]):
    model = compose_from_paths(bases["anchor"], [bases["augment"]], every=4)
    quick_train(model)
    return model


@pytest.mark.parametrize(
    "anchor,augment",
    [("anchor", "augment"), ("gpt2", "anchor"), ("anchor", "gpt2"), ("anchor", "qwen3")],
)
def test_identity_at_init_exact(bases: dict[str, Path], anchor: str, augment: str) -> None:
    model = compose_from_paths(bases[anchor], [bases[augment]], every=2)
    ids = random_ids(3, 12, seed=0)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding in one row
    with torch.no_grad():
        composed = model(ids, attention_mask=mask)["logits"]
        plain = model.anchor(
            ids, attention_mask=mask, position_ids=positions_from_mask(mask)
        ).logits
    assert (composed - plain).abs().max().item() == 0.0


@pytest.mark.parametrize("mask", ["causal", "diagonal"])
def test_identity_at_init_with_every_option(bases: dict[str, Path], mask: str) -> None:
    model = compose_from_paths(
        bases["anchor"],
        [bases["augment"]],
        kv_norm=True,
        mask=mask,
        scale_output=True,
        null_key=True,
        pairs=[[(-1, -1), (2, 1), (7, 3)]],
    )
    ids = random_ids(2, 9, seed=11)
    with torch.no_grad():
        assert (model(ids)["logits"] - model.anchor(ids).logits).abs().max().item() == 0.0
    cfg = model.composition_config
    assert model.composition.num_parameters() == cfg.parameter_count()


def test_scaled_output_is_relative_to_the_anchor_stream() -> None:
    from fusekit.strategies.calm.composition import CrossBlock

    torch.manual_seed(0)
    block = CrossBlock(8, 16, 2, scale_output=True)
    torch.nn.init.normal_(block.o_proj.weight)
    h, mem = torch.randn(1, 3, 16), torch.randn(1, 4, 8)
    k, v = block.memory(mem)
    visible = torch.ones(1, 3, 4, dtype=torch.bool)
    # the query is RMS-normalised, so scaling the stream scales the update by the same factor
    torch.testing.assert_close(block(10 * h, k, v, visible), 10 * block(h, k, v, visible))


def test_null_key_gates_a_single_visible_position() -> None:
    from fusekit.strategies.calm.composition import CrossBlock

    torch.manual_seed(0)
    block = CrossBlock(8, 16, 2, null_key=True)
    torch.nn.init.normal_(block.o_proj.weight)
    h, mem = torch.randn(1, 1, 16), torch.randn(1, 1, 8)
    k, v = block.memory(mem)
    one = torch.ones(1, 1, 1, dtype=torch.bool)
    open_ = block(h, k, v, one)
    with torch.no_grad():  # point the null key along the query: it wins the softmax
        q = block._split(block.q_proj(block.norm(h)))[0, :, 0]
        block.null_key.copy_(1e3 * q)
    assert block(h, k, v, one).abs().max() < 1e-3 * open_.abs().max()
    # nothing visible: exactly zero, null key or not
    assert block(h, k, v, ~one).abs().max().item() == 0.0


def test_identity_at_init_through_the_kv_cache(bases: dict[str, Path]) -> None:
    model = compose_from_paths(bases["anchor"], [bases["augment"]], pairs=[[("embed", -1), (7, 2)]])
    ids = random_ids(2, 10, seed=1)
    mask = torch.ones_like(ids)
    pos = positions_from_mask(mask)
    with torch.no_grad():
        aug_cache, anchor_cache = DynamicCache(), DynamicCache()
        states = model.augment_states(0, ids[:, :6], mask[:, :6], pos[:, :6], aug_cache)
        mem = model.memory(0, states, pos[:, :6], mask[:, :6].bool())
        first = model.anchor_forward(
            ids[:, :6], mask[:, :6], pos[:, :6], [mem], pos[:, :6], mask[:, :6].bool(), anchor_cache
        )
        steps = [first]
        for t in range(6, 10):
            sl = slice(t, t + 1)
            states = model.augment_states(0, ids[:, sl], mask[:, : t + 1], pos[:, sl], aug_cache)
            mem = mem.append(model.memory(0, states, pos[:, sl], mask[:, sl].bool()))
            steps.append(
                model.anchor_forward(
                    ids[:, sl],
                    mask[:, : t + 1],
                    pos[:, sl],
                    [mem],
                    pos[:, sl],
                    mask[:, sl].bool(),
                    anchor_cache,
                )
            )
        ref_cache = DynamicCache()
        ref = [model.anchor(ids[:, :6], **cache_kwargs(model.anchor, ref_cache)).logits]
        for t in range(6, 10):
            ref.append(
                model.anchor(ids[:, t : t + 1], **cache_kwargs(model.anchor, ref_cache)).logits
            )
    assert (torch.cat(steps, 1) - torch.cat(ref, 1)).abs().max().item() == 0.0


def test_generation_at_init_matches_the_anchor(bases: dict[str, Path]) -> None:
    model = compose_from_paths(bases["anchor"], [bases["augment"]])
    ids = random_ids(2, 7, seed=2)
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0  # left padding
    ours = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None)
    theirs = model.anchor.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert ours.tolist() == theirs.tolist()


def test_training_moved_the_composition(trained) -> None:
    assert all(
        b.o_proj.weight.abs().max() > 0 for blocks in trained.composition.blocks for b in blocks
    )
    ids = random_ids(2, 12, seed=3)
    with torch.no_grad():
        diff = (trained(ids)["logits"] - trained.anchor(ids).logits).abs().max().item()
    assert diff > 1e-3  # the checks below are not vacuous


@pytest.mark.parametrize("mask_kind", ["causal", "diagonal"])
def test_future_tokens_do_not_change_the_past(bases: dict[str, Path], mask_kind: str) -> None:
    model = compose_from_paths(bases["anchor"], [bases["augment"]], mask=mask_kind, every=2)
    quick_train(model)
    ids = random_ids(2, 16, seed=4)
    changed = ids.clone()
    t = 9
    changed[:, t + 1 :] = random_ids(2, 16 - t - 1, seed=5)
    with torch.no_grad():
        a = model(ids)["logits"]
        b = model(changed)["logits"]
    assert (a[:, : t + 1] - b[:, : t + 1]).abs().max().item() == 0.0
    assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max().item() > 0


def test_padding_is_never_attended(trained) -> None:
    ids = random_ids(2, 10, seed=6)
    mask = torch.ones_like(ids)
    mask[:, 7:] = 0
    other = ids.clone()
    other[:, 7:] = 5  # different pad contents
    with torch.no_grad():
        a = trained(ids, attention_mask=mask)["logits"][:, :7]
        b = trained(other, attention_mask=mask)["logits"][:, :7]
        # left padding gives the same logits as the unpadded row
        left = torch.cat([torch.full((1, 3), 0), ids[:1, :7]], 1)
        lmask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7).long()], 1)
        c = trained(left, attention_mask=lmask)["logits"][:, 3:]
        d = trained(ids[:1, :7])["logits"]
    assert (a - b).abs().max().item() == 0.0
    torch.testing.assert_close(c, d, atol=1e-5, rtol=1e-5)


def test_bases_are_frozen_and_in_eval_mode(trained) -> None:
    trained.train()
    assert not trained.anchor.training and not any(a.training for a in trained.augments)
    assert trained.composition.training
    trained.eval()
    frozen = [p for n, p in trained.named_parameters() if not n.startswith("composition.")]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in trained.composition.parameters())


def test_parameter_report(trained) -> None:
    report = trained.parameter_report()
    cfg = trained.composition_config
    d_b, d_a = cfg.anchor_hidden_size, cfg.augments[0].hidden_size
    n = len(cfg.augments[0].pairs)
    assert report["composition_parameters"] == n * (d_a * d_b + 4 * d_b * d_b + d_b)
    assert report["composition_parameters"] == cfg.parameter_count()
    anchor = sum(p.numel() for p in trained.anchor.parameters())
    assert report["share_of_anchor"] == pytest.approx(report["composition_parameters"] / anchor)

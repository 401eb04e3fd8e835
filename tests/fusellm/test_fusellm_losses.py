"""The objective: λ = 1 is plain CLM bit for bit; the fusion term is soft-target CE."""

from __future__ import annotations

import pytest
import torch

from fusekit.strategies.fusellm.losses import (
    clm_loss,
    fused_objective,
    fusion_loss,
    next_token_mask,
)
from tests.fusellm.conftest import tiny_llama


def _batch(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (3, 12), generator=g)
    labels = ids.clone()
    labels[2, 9:] = -100  # a padded row
    return ids, labels


def _sparse(shape: tuple[int, int], k: int, width: int, seed: int = 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, width, (*shape, k), generator=g)
    probs = torch.softmax(torch.randn(*shape, k, generator=g), dim=-1)
    return ids, probs


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_lambda_one_is_plain_clm_loss_and_grads() -> None:
    model = tiny_llama(50).train()
    ids, labels = _batch(50)
    attn = (labels != -100).long()
    attn[:, 0] = 1

    model.zero_grad()
    ref = model(input_ids=ids, attention_mask=attn, labels=labels).loss
    ref.backward()
    ref_grads = _grads(model)

    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=attn).logits
    target = _sparse(ids.shape, 5, logits.shape[-1])
    loss, parts = fused_objective(logits, labels, target, lam=1.0)
    loss.backward()
    assert torch.equal(loss, ref)
    assert set(parts) == {"clm"}
    for got, want in zip(_grads(model), ref_grads, strict=True):
        assert torch.equal(got, want)


def test_clm_loss_matches_model_loss_with_num_items() -> None:
    model = tiny_llama(40)
    ids, labels = _batch(40, seed=3)
    n = (labels[:, 1:] != -100).sum()
    logits = model(input_ids=ids).logits
    ref = model(input_ids=ids, labels=labels, num_items_in_batch=n).loss
    assert torch.equal(clm_loss(logits, labels, n), ref)


def _dense_soft_ce(logits, ids, probs, mask):
    """The reference's form: a dense target tensor and cross_entropy with probabilities."""
    dense = torch.zeros_like(logits)
    dense.scatter_add_(-1, ids, probs)
    per = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), dense.flatten(0, 1), reduction="none"
    ).view(mask.shape)
    return (per * mask).sum() / mask.sum()


def test_fusion_loss_equals_dense_soft_target_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 30, generator=g)
    ids, probs = _sparse((2, 7), 4, 30)
    mask = torch.rand(2, 7, generator=g) > 0.3
    got = fusion_loss(logits, ids, probs, mask)
    want = _dense_soft_ce(logits, ids, probs, mask.float())
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-6)


def test_fusion_loss_on_one_hot_next_token_is_clm() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 25, generator=g)
    ids, labels = _batch(25, seed=4)
    ids, labels = ids[:2, :6], labels[:2, :6]
    nxt = torch.cat([ids[:, 1:], ids[:, -1:]], dim=1).unsqueeze(-1)
    loss = fusion_loss(
        logits, nxt, torch.ones_like(nxt, dtype=torch.float), next_token_mask(labels)
    )
    assert torch.allclose(loss, clm_loss(logits, labels), atol=1e-6)


def test_padded_vocabulary_and_gradient_only_on_target_ids() -> None:
    logits = torch.zeros(1, 3, 40, requires_grad=True)  # model pads the vocabulary to 40
    ids = torch.tensor([[[39, 5], [1, 2], [0, 0]]])
    probs = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    fusion_loss(logits, ids, probs, mask).backward()
    grad = logits.grad[0]
    assert grad[2].abs().sum() == 0  # masked position: no gradient
    assert grad[0, 39] < 0 and grad[0, 5] < 0 and grad[1, 1] < 0


def test_mixture_weights_and_num_items() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 12, 20, generator=g)
    ids, labels = _batch(20)
    target = _sparse(ids.shape, 3, 20)
    mask = next_token_mask(labels)
    lam = 0.3
    loss, parts = fused_objective(logits, labels, target, lam)
    want = lam * clm_loss(logits, labels) + (1 - lam) * fusion_loss(logits, *target, mask)
    assert torch.allclose(loss, want)
    assert set(parts) == {"clm", "fusion"}
    n = mask.sum() * 2  # as if this were half of an accumulated batch
    half, _ = fused_objective(logits, labels, target, lam, num_items_in_batch=n)
    assert torch.allclose(half * 2, loss, atol=1e-6)
    only, parts = fused_objective(logits, labels, target, 0.0)
    assert set(parts) == {"fusion"}
    assert torch.allclose(only, fusion_loss(logits, *target, mask))


def test_mixture_in_one_pass_has_the_two_term_gradients() -> None:
    """0 < λ < 1 reads one log-softmax for both terms; value and gradient are the sum's."""
    g = torch.Generator().manual_seed(6)
    base = torch.randn(3, 12, 20, generator=g)
    ids, labels = _batch(20)
    labels[1, 4] = -100  # a hole inside a row, too
    target = _sparse(ids.shape, 3, 20)
    mask = next_token_mask(labels)
    for lam, n in ((0.3, None), (0.9, mask.sum() * 2)):
        got_logits = base.clone().requires_grad_()
        loss, parts = fused_objective(got_logits, labels, target, lam, num_items_in_batch=n)
        loss.backward()
        ref_logits = base.clone().requires_grad_()
        clm = clm_loss(ref_logits, labels, n)
        fus = fusion_loss(ref_logits, *target, mask, n)
        (lam * clm + (1 - lam) * fus).backward()
        assert torch.allclose(loss, lam * clm + (1 - lam) * fus, atol=1e-6)
        assert parts["clm"] == pytest.approx(float(clm.detach()), abs=1e-6)
        assert parts["fusion"] == pytest.approx(float(fus.detach()), abs=1e-6)
        assert torch.allclose(got_logits.grad, ref_logits.grad, atol=1e-7)

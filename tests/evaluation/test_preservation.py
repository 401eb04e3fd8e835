"""Function preservation: exactly zero for the same function, positive otherwise."""

from __future__ import annotations

import copy
from typing import Any

import torch

from fusekit.evaluation.preservation import function_preservation, max_logit_delta

from .conftest import ComposedLike, make_llama


def _ids(vocab: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(3, vocab, (2, 12), generator=generator)


def test_same_model_is_exactly_zero_with_and_without_cache(model: Any, tokenizer: Any) -> None:
    clone = copy.deepcopy(model)
    result = function_preservation(model, clone, _ids(len(tokenizer)))
    assert result == {"max_abs_logit_delta": 0.0, "max_abs_logit_delta_cached": 0.0}


def test_perturbed_model_is_positive(model: Any, tokenizer: Any) -> None:
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        perturbed.model.layers[1].mlp.down_proj.weight.add_(1e-3)
    result = function_preservation(model, perturbed, _ids(len(tokenizer)), prefill=4)
    assert result["max_abs_logit_delta"] > 0.0
    assert result["max_abs_logit_delta_cached"] is not None
    assert result["max_abs_logit_delta_cached"] > 0.0


def test_a_wrapped_model_matches_its_inner_model(model: Any, tokenizer: Any) -> None:
    assert max_logit_delta(model, ComposedLike(model, tokenizer), _ids(len(tokenizer))) == 0.0


def test_cached_decoding_agrees_with_one_forward(model: Any, tokenizer: Any) -> None:
    """The cached path really runs through the cache: it agrees with a full forward
    to float precision but need not be bit-identical."""
    from fusekit.evaluation.adapters import as_scorable

    ids = _ids(len(tokenizer))
    mask = torch.ones_like(ids)
    adapter = as_scorable(model, tokenizer)
    full = adapter.logits(ids, mask)
    cached = adapter.cached_logits(ids, mask, prefill=3)
    assert cached.shape == full.shape
    assert torch.allclose(cached, full, atol=1e-4)


def test_padding_positions_are_not_compared(tokenizer: Any) -> None:
    a, b = make_llama(len(tokenizer), seed=5), make_llama(len(tokenizer), seed=6)
    ids = _ids(len(tokenizer))
    mask = torch.zeros_like(ids)
    assert max_logit_delta(a, b, ids, mask) == 0.0
    mask[0, :3] = 1
    assert max_logit_delta(a, b, ids, mask) > 0.0


def test_a_forward_without_cache_support_reports_none(tokenizer: Any) -> None:
    from .conftest import BigramModel

    table = torch.randn(len(tokenizer), len(tokenizer))
    a, b = BigramModel(table, tokenizer), BigramModel(table.clone(), tokenizer)
    result = function_preservation(a, b, _ids(len(tokenizer)))
    assert result == {"max_abs_logit_delta": 0.0, "max_abs_logit_delta_cached": None}

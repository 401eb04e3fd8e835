"""Exact match: the same greedy decoding as ``model.generate``, batched or not."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fusekit.evaluation.generation import cut_at_stop, exact_match, greedy_generate

from .conftest import FACTS, ComposedLike

PROMPTS = ["the", "capital of france:", "héllo wörld, naïve", "12 + 30 = 42 and 7 - 5", "a"]


def one_by_one(model: Any, tokenizer: Any, prompts: list[str], max_new: int) -> list[list[int]]:
    """``model.generate`` on each prompt alone (no padding), cut at EOS."""
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=True)])
        out = model.generate(
            ids, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        outputs.append(cut_at_stop(out[0, ids.shape[1] :].tolist(), [tokenizer.eos_token_id]))
    return outputs


def test_batched_left_padded_generation_equals_generate_one_by_one(
    model: Any, tokenizer: Any
) -> None:
    expected = one_by_one(model, tokenizer, PROMPTS, max_new=6)
    assert len({tuple(e) for e in expected}) > 1  # not a degenerate model
    batched = greedy_generate(model, PROMPTS, tokenizer=tokenizer, max_new_tokens=6, batch_size=4)
    assert batched == expected
    composed = greedy_generate(
        ComposedLike(model, tokenizer), PROMPTS, max_new_tokens=6, batch_size=3
    )
    assert composed == expected


def test_generation_stops_at_eos(trained_model: Any, tokenizer: Any) -> None:
    prompts = [prompt for prompt, _ in FACTS]
    generated = greedy_generate(trained_model, prompts, tokenizer=tokenizer, max_new_tokens=8)
    texts = [tokenizer.decode(ids) for ids in generated]
    assert texts == [completion for _, completion in FACTS]


def test_exact_match_on_a_model_that_learned_the_answers(
    trained_model: Any, tokenizer: Any
) -> None:
    result = exact_match(trained_model, FACTS, tokenizer=tokenizer, batch_size=2)
    assert (result.correct, result.total) == (len(FACTS), len(FACTS))
    assert result.accuracy == 1.0
    longest = max(len(tokenizer.encode(c, add_special_tokens=False)) for _, c in FACTS)
    assert result.max_new_tokens == longest + 4
    wrong = [(prompt, " " + completion.strip()[::-1]) for prompt, completion in FACTS[:2]]
    mixed = exact_match(trained_model, FACTS[2:] + wrong, tokenizer=tokenizer)
    assert (mixed.correct, mixed.total) == (len(FACTS) - 2, len(FACTS))
    assert mixed.predictions[-2:] == [c for _, c in FACTS[:2]]


def test_a_too_small_token_budget_fails_the_match(trained_model: Any, tokenizer: Any) -> None:
    result = exact_match(trained_model, FACTS[3:4], tokenizer=tokenizer, max_new_tokens=1)
    assert result.correct == 0


def test_object_without_generate_is_refused(tokenizer: Any) -> None:
    from fusekit.errors import FusekitError

    class LogitsOnly:
        def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*input_ids.shape, len(tokenizer))

    with pytest.raises(FusekitError, match="generate"):
        exact_match(LogitsOnly(), FACTS, tokenizer=tokenizer)

"""Multiple choice by log-likelihood, on cases whose answer is known in advance."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fusekit.evaluation.choice import multiple_choice

from .conftest import FACTS, BigramModel


def test_a_trained_model_prefers_what_it_learned(trained_model: Any, tokenizer: Any) -> None:
    completions = [c for _, c in FACTS]
    items = [
        (prompt, completions, index) for index, (prompt, _) in enumerate(FACTS)
    ]  # every learned completion offered to every prompt
    result = multiple_choice(trained_model, items, tokenizer=tokenizer, batch_size=3)
    assert result.chosen == list(range(len(FACTS)))
    assert result.accuracy == 1.0 and result.total == len(FACTS)
    shifted = [(p, cs, (a + 1) % len(cs)) for p, cs, a in items]
    assert multiple_choice(trained_model, shifted, tokenizer=tokenizer).accuracy == 0.0


def test_sum_prefers_short_answers_and_byte_normalisation_corrects_it(tokenizer: Any) -> None:
    uniform = BigramModel(torch.zeros(len(tokenizer), len(tokenizer)), tokenizer)
    short, long = " x", " the quick brown fox jumps over the lazy dog."
    n_short = len(tokenizer.encode(short, add_special_tokens=False))
    n_long = len(tokenizer.encode(long, add_special_tokens=False))
    # under a uniform model log p = -n ln V: fewer tokens win the sum,
    # more bytes per token win the normalised score
    assert n_short < n_long
    assert n_short / len(short.encode()) > n_long / len(long.encode())
    result = multiple_choice(uniform, [("q:", [short, long], 1)], max_length=64)
    assert result.chosen == [0] and result.chosen_norm == [1]
    assert (result.accuracy, result.accuracy_norm) == (0.0, 1.0)


def test_matches_an_independent_bigram_computation(tokenizer: Any) -> None:
    torch.manual_seed(0)
    table = torch.randn(len(tokenizer), len(tokenizer), dtype=torch.float64) * 3
    log_p = torch.log_softmax(table, dim=-1)
    model = BigramModel(table, tokenizer)
    questions = [
        ("the quick brown", [" fox", " dog", " cat jumps"]),
        ("12 + 30 =", [" 42", " 7", " 12 + 30"]),
        ("capital:", [" paris", " rome", " naïve café"]),
    ]

    def logprob(prompt: str, choice: str) -> float:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)
        ids = tokenizer.encode(prompt + choice, add_special_tokens=True)
        assert ids[: len(prompt_ids)] == prompt_ids
        return sum(float(log_p[ids[t - 1], ids[t]]) for t in range(len(prompt_ids), len(ids)))

    expected = [max(range(3), key=lambda k, p=p, cs=cs: logprob(p, cs[k])) for p, cs in questions]
    result = multiple_choice(model, [(p, cs, 0) for p, cs in questions], max_length=32)
    assert result.chosen == expected
    assert result.correct == expected.count(0)


def test_answers_out_of_range_are_refused(tokenizer: Any) -> None:
    uniform = BigramModel(torch.zeros(len(tokenizer), len(tokenizer)), tokenizer)
    with pytest.raises(ValueError, match="answer"):
        multiple_choice(uniform, [("q", [" a", " b"], 2)], max_length=8)

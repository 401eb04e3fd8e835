"""Bits per byte and perplexity against an independent, unbatched computation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from fusekit.evaluation.text_scoring import score_texts
from fusekit.evaluation.tokenization import scoring_prefix, scoring_sequence

from .conftest import CORPUS, ComposedLike, make_llama

LONG = " ".join(CORPUS)  # ~110 tokens: longer than the windows used below


def plain_nll(model: Any, ids: list[int], first: int = 1) -> float:
    """-sum log p(ids[t] | ids[:t]) for t >= first, one unpadded forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    log_probs = torch.log_softmax(logits[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    picked = log_probs.gather(-1, targets[:, None])[:, 0]
    return float(-picked[first - 1 :].sum())


def reference_bpb(model: Any, tokenizer: Any, texts: list[str]) -> float:
    """Tokens with BOS in front, one forward per text, nats / bytes / ln 2."""
    nats = 0.0
    for text in texts:
        ids = [tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False)]
        nats += plain_nll(model, ids)
    return nats / sum(len(t.encode("utf-8")) for t in texts) / math.log(2)


def test_scoring_prefix_per_tokenizer_kind(
    tokenizer: Any, eot_tokenizer: Any, bare_tokenizer: Any
) -> None:
    assert scoring_prefix(tokenizer) == [tokenizer.bos_token_id]  # added by the tokenizer
    assert scoring_prefix(eot_tokenizer) == [eot_tokenizer.eos_token_id]  # GPT-2 style
    assert scoring_prefix(bare_tokenizer) == []


def test_bpb_equals_an_independent_computation(model: Any, tokenizer: Any) -> None:
    expected = reference_bpb(model, tokenizer, CORPUS)
    for batch_size in (1, 4):
        score = score_texts(model, CORPUS, tokenizer=tokenizer, batch_size=batch_size)
        assert score.bpb == pytest.approx(expected, rel=1e-6)
        assert score.bytes == sum(len(t.encode("utf-8")) for t in CORPUS)
        assert score.documents == len(CORPUS)


def test_batch_size_and_padding_do_not_change_the_value(model: Any, tokenizer: Any) -> None:
    texts = [*CORPUS, "a", LONG]  # very different lengths, so batches carry much padding
    one = score_texts(model, texts, tokenizer=tokenizer, batch_size=1)
    four = score_texts(model, texts, tokenizer=tokenizer, batch_size=4)
    assert four.nats == pytest.approx(one.nats, rel=1e-6)
    assert four.tokens == one.tokens and four.bytes == one.bytes


def test_perplexity_is_consistent_with_bpb(model: Any, tokenizer: Any) -> None:
    score = score_texts(model, CORPUS, tokenizer=tokenizer, batch_size=3)
    n_tokens = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in CORPUS)
    assert score.tokens == n_tokens
    from_bpb = math.exp(score.bpb * score.bytes * math.log(2) / score.tokens)
    assert score.perplexity == pytest.approx(from_bpb, rel=1e-9)


def test_disjoint_windows_match_the_rolling_definition(model: Any, tokenizer: Any) -> None:
    length = 16
    ids = [tokenizer.bos_token_id, *tokenizer.encode(LONG, add_special_tokens=False)]
    assert len(ids) > 3 * length
    # targets in chunks of L-1; each chunk's window is the L tokens ending on its last target
    nats = 0.0
    for chunk in range(1, len(ids), length - 1):
        end = min(len(ids), chunk + length - 1)
        begin = max(0, end - length)
        nats += plain_nll(model, ids[begin:end], first=chunk - begin)
    score = score_texts(model, [LONG], tokenizer=tokenizer, max_length=length, batch_size=2)
    assert score.nats == pytest.approx(nats, rel=1e-6)
    assert score.tokens == len(ids) - 1


def test_stride_one_gives_every_token_a_full_context(model: Any, tokenizer: Any) -> None:
    length = 8
    ids = [tokenizer.bos_token_id, *tokenizer.encode(CORPUS[0], add_special_tokens=False)]
    assert len(ids) > 2 * length
    nats = sum(
        plain_nll(model, ids[max(0, t - length + 1) : t + 1], first=min(t, length - 1))
        for t in range(1, len(ids))
    )
    score = score_texts(
        model, [CORPUS[0]], tokenizer=tokenizer, max_length=length, stride=1, batch_size=8
    )
    assert score.nats == pytest.approx(nats, rel=1e-6)


def test_windows_longer_than_the_text_change_nothing(model: Any, tokenizer: Any) -> None:
    full = score_texts(model, CORPUS, tokenizer=tokenizer)
    windowed = score_texts(model, CORPUS, tokenizer=tokenizer, max_length=64, stride=20)
    assert windowed.nats == pytest.approx(full.nats, rel=1e-6)
    short = score_texts(model, [LONG], tokenizer=tokenizer, max_length=8)
    whole = score_texts(model, [LONG], tokenizer=tokenizer, max_length=64)
    assert short.nats != pytest.approx(whole.nats, rel=1e-3)  # windows really cut context


def test_gpt2_style_tokenizer_is_scored_from_its_end_of_text_token(eot_tokenizer: Any) -> None:
    model = make_llama(len(eot_tokenizer), seed=3)
    eot = eot_tokenizer.eos_token_id
    nats = sum(
        plain_nll(model, [eot, *eot_tokenizer.encode(t, add_special_tokens=False)]) for t in CORPUS
    )
    score = score_texts(model, CORPUS, tokenizer=eot_tokenizer, batch_size=2)
    assert score.nats == pytest.approx(nats, rel=1e-6)


def test_without_any_bos_the_first_token_is_context_but_its_bytes_count(
    bare_tokenizer: Any,
) -> None:
    model = make_llama(len(bare_tokenizer), seed=4)
    nats, tokens = 0.0, 0
    for text in CORPUS:
        ids = bare_tokenizer.encode(text, add_special_tokens=False)
        nats += plain_nll(model, ids)
        tokens += len(ids) - 1
    score = score_texts(model, CORPUS, tokenizer=bare_tokenizer, batch_size=2)
    assert score.nats == pytest.approx(nats, rel=1e-6)
    assert score.tokens == tokens
    assert score.bytes == sum(len(t.encode("utf-8")) for t in CORPUS)


def test_prompt_completion_scores_the_completion_only(model: Any, tokenizer: Any) -> None:
    prompt, completion = "capital of france: ", "paris"
    ids, first, scored = scoring_sequence(tokenizer, prompt, completion)
    assert scored == " paris"  # the prompt's trailing space moved to the completion
    assert tokenizer.decode(ids[first:]) == " paris"
    assert ids == tokenizer.encode("capital of france: paris", add_special_tokens=True)
    score = score_texts(model, [(prompt, completion)], tokenizer=tokenizer)
    assert score.nats == pytest.approx(plain_nll(model, ids, first=first), rel=1e-6)
    assert score.bytes == len(" paris")


def test_a_streamed_iterator_and_a_composed_model_give_the_same_value(
    model: Any, tokenizer: Any
) -> None:
    expected = score_texts(model, CORPUS, tokenizer=tokenizer)
    streamed = score_texts(
        ComposedLike(model, tokenizer), iter(CORPUS), batch_size=2, progress=True
    )
    assert streamed.nats == pytest.approx(expected.nats, rel=1e-6)
    assert streamed.max_length == 64  # the anchor's context

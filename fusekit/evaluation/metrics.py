"""The arithmetic of each metric, apart from any model: pure functions of counts and strings.

Bits per byte is the tokenizer-free measure: the same text costs the same
number of bytes whatever the vocabulary, so models with different tokenizers
compare fairly.  Perplexity is per token of the model's own tokenizer, so it
only compares models that share one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LN2 = math.log(2.0)


def bits_per_byte(nats: float, n_bytes: int) -> float:
    """Total next-token NLL (nats) over the text / its UTF-8 bytes / ln 2."""
    if n_bytes <= 0:
        raise ValueError("bits per byte needs at least one byte of text")
    return nats / n_bytes / LN2


def perplexity(nats: float, n_tokens: int) -> float:
    """exp(mean NLL per scored token)."""
    if n_tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    return math.exp(nats / n_tokens)


def accuracy(correct: int, total: int) -> float:
    """Fraction correct."""
    if total <= 0:
        raise ValueError("accuracy needs at least one example")
    return correct / total


def clean_prediction(text: str, stop: Sequence[str] = ()) -> str:
    """Cut ``text`` at the first of the ``stop`` strings, then strip surrounding whitespace."""
    cut = len(text)
    for marker in stop:
        if marker:
            found = text.find(marker)
            if 0 <= found < cut:
                cut = found
    return text[:cut].strip()


def is_exact_match(prediction: str, reference: str, stop: Sequence[str] = ()) -> bool:
    """Equal after ``clean_prediction`` and stripping the reference's surrounding whitespace.

    A one-line reference is compared with the prediction's first line: a base model
    prompted with demonstrations, one per line, answers and then starts the next
    line, which EOS never ends (lm-evaluation-harness stops such tasks at a newline).
    """
    answer, expected = clean_prediction(prediction, stop), reference.strip()
    if "\n" not in expected:
        answer = answer.split("\n", 1)[0].rstrip()
    return answer == expected


def choice_scores(logprob: float, n_bytes: int) -> tuple[float, float]:
    """``(sum log p, sum log p / bytes)`` of one answer choice.

    Normalising by UTF-8 bytes rather than tokens keeps the length correction
    independent of the tokenizer (lm-evaluation-harness's ``acc_norm`` does the
    same with characters).
    """
    return logprob, logprob / max(n_bytes, 1)

"""Exact-match accuracy of greedy generation on prompt/completion pairs.

Decoding is the model's own ``generate`` with ``do_sample=False`` (greedy; for
Hugging Face models also ``num_beams=1``), so the harness measures exactly
what a user calling ``generate`` gets.  Prompts — the scoring prefix (BOS) and
the prompt's tokens as written, see ``tokenization`` — are batched
``batch_size`` at a time, longest first, left-padded with an attention mask:
``generate`` derives position ids from the mask and keeps a KV cache, so a
left-padded row decodes like the same prompt alone.

A prediction is the generated text up to the first EOS (the tokenizer's, plus
any the model's generation config names), decoded without special tokens,
cut at the first ``stop`` string if any are given, and compared with the
reference after both are stripped of surrounding whitespace.  Generation
stops at EOS or after ``max_new_tokens`` — by default the longest reference's
token count plus ``margin``: a prediction that needs more tokens than that
cannot match anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusekit.evaluation.adapters import ModelAdapter, ScorableModel, as_scorable, pad_batch, pad_id
from fusekit.evaluation.metrics import accuracy, is_exact_match
from fusekit.evaluation.tokenization import encode_plain, prompt_ids, scoring_prefix
from fusekit.log import bars_disabled

DEFAULT_MARGIN = 4


@dataclass
class ExactMatchResult:
    """Counts and the predictions themselves, in record order."""

    correct: int
    total: int
    max_new_tokens: int
    generated_tokens: int
    predictions: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return accuracy(self.correct, self.total)


def _stop_ids(model: ScorableModel) -> list[int]:
    if isinstance(model, ModelAdapter):
        return model.stop_ids()
    eos = getattr(model.tokenizer, "eos_token_id", None)
    return [eos] if isinstance(eos, int) else []


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """The ids before the first stop id (the stop id itself is dropped)."""
    out: list[int] = []
    for token in ids:
        if token in stop_ids:
            break
        out.append(int(token))
    return out


def greedy_generate(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    tokenizer: Any = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """The greedy continuation ids of each prompt (stopped at, and without, EOS), in order.

    With ``max_length``, prompts keep only their last ``max_length - max_new_tokens``
    tokens, so prompt and continuation fit the model's context.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    scorable = as_scorable(model, tokenizer)
    prefix = scoring_prefix(scorable.tokenizer)
    encoded = [prompt_ids(scorable.tokenizer, prompt, prefix) for prompt in prompts]
    if max_length is not None:
        keep = max_length - max_new_tokens
        if keep < 1:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room in {max_length}")
        encoded = [ids[-keep:] for ids in encoded]
    if any(not ids for ids in encoded):
        raise ValueError("cannot generate from an empty prompt with a tokenizer that has no BOS")
    stop_ids = _stop_ids(scorable)
    eos: int | list[int] | None = (
        None if not stop_ids else stop_ids[0] if len(stop_ids) == 1 else stop_ids
    )
    pad = pad_id(scorable.tokenizer)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[list[int]] = [[] for _ in encoded]
    starts: Iterable[int] = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", unit="batch", leave=False, disable=bars_disabled())
    for start in starts:
        rows = order[start : start + batch_size]
        input_ids, attention_mask = pad_batch(
            [encoded[i] for i in rows], pad, left=True, device=scorable.device
        )
        new = scorable.generate_greedy(
            input_ids,
            attention_mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for row, index in enumerate(rows):
            results[index] = cut_at_stop(new[row].tolist(), stop_ids)
    return results


def exact_match(
    model: Any,
    pairs: Iterable[tuple[str, str]],
    *,
    tokenizer: Any = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    margin: int = DEFAULT_MARGIN,
    stop: Sequence[str] = (),
    progress: bool = False,
) -> ExactMatchResult:
    """Greedy-generate a completion for each ``(prompt, reference)`` and count exact matches."""
    scorable = as_scorable(model, tokenizer)
    items = list(pairs)
    if not items:
        raise ValueError("exact match needs at least one prompt/completion pair")
    if max_new_tokens is None:
        longest = max(len(encode_plain(scorable.tokenizer, ref)) for _, ref in items)
        max_new_tokens = longest + margin
    generated = greedy_generate(
        scorable,
        [prompt for prompt, _ in items],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    predictions = [scorable.tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
    correct = sum(
        is_exact_match(prediction, reference, stop)
        for prediction, (_, reference) in zip(predictions, items, strict=True)
    )
    return ExactMatchResult(
        correct=correct,
        total=len(items),
        max_new_tokens=max_new_tokens,
        generated_tokens=sum(len(ids) for ids in generated),
        predictions=predictions,
    )

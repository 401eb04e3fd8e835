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
reference after both are stripped of surrounding whitespace; a one-line
reference is compared with the prediction's first line.  Generation
stops at EOS or after ``max_new_tokens`` — by default the longest reference's
token count plus ``margin``: a prediction that needs more tokens than that
cannot match anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusekit.evaluation.adapters import ModelAdapter, ScorableModel, as_scorable, pad_batch, pad_id
from fusekit.evaluation.conversations import TemplatedPrompt
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


def _turn_ends(tokenizer: Any, prompts: Sequence[str | TemplatedPrompt]) -> list[int]:
    """The ids of the end-of-turn markers of templated prompts that are one token each."""
    ends: list[int] = []
    for p in prompts:
        if isinstance(p, TemplatedPrompt) and p.end_of_turn:
            ids = encode_plain(tokenizer, p.end_of_turn)
            if len(ids) == 1 and ids[0] not in ends:
                ends.append(ids[0])
    return ends


def greedy_generate(
    model: Any,
    prompts: Sequence[str | TemplatedPrompt],
    *,
    max_new_tokens: int,
    tokenizer: Any = None,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """The greedy continuation ids of each prompt (stopped at, and without, EOS or a
    conversation's end-of-turn token), in order.

    A ``TemplatedPrompt`` is generated from its rendered text alone (the chat template
    wrote any BOS).  With ``max_length``, prompts keep only their last
    ``max_length - max_new_tokens`` tokens, so prompt and continuation fit the context.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    scorable = as_scorable(model, tokenizer)
    prefix = scoring_prefix(scorable.tokenizer)
    encoded = [
        encode_plain(scorable.tokenizer, p.prompt)
        if isinstance(p, TemplatedPrompt)
        else prompt_ids(scorable.tokenizer, p, prefix)
        for p in prompts
    ]
    if max_length is not None:
        keep = max_length - max_new_tokens
        if keep < 1:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room in {max_length}")
        encoded = [ids[-keep:] for ids in encoded]
    if any(not ids for ids in encoded):
        raise ValueError("cannot generate from an empty prompt with a tokenizer that has no BOS")
    stop_ids = _stop_ids(scorable)
    stop_ids += [i for i in _turn_ends(scorable.tokenizer, prompts) if i not in stop_ids]
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
    pairs: Iterable[tuple[str, str] | TemplatedPrompt],
    *,
    tokenizer: Any = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    margin: int = DEFAULT_MARGIN,
    stop: Sequence[str] = (),
    progress: bool = False,
) -> ExactMatchResult:
    """Greedy-generate a completion for each ``(prompt, reference)`` or ``TemplatedPrompt``
    and count exact matches; a templated answer is also cut at its end-of-turn text, for
    a marker that is not one token."""
    scorable = as_scorable(model, tokenizer)
    items: list[tuple[str | TemplatedPrompt, str, list[str]]] = [
        (p, p.reference, [p.end_of_turn] if p.end_of_turn else [])
        if isinstance(p, TemplatedPrompt)
        else (p[0], p[1], [])
        for p in pairs
    ]
    if not items:
        raise ValueError("exact match needs at least one prompt/completion pair")
    if max_new_tokens is None:
        longest = max(len(encode_plain(scorable.tokenizer, ref)) for _, ref, _ in items)
        max_new_tokens = longest + margin
    generated = greedy_generate(
        scorable,
        [prompt for prompt, _, _ in items],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    predictions = [scorable.tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
    correct = sum(
        is_exact_match(prediction, reference, [*stop, *ends])
        for prediction, (_, reference, ends) in zip(predictions, items, strict=True)
    )
    return ExactMatchResult(
        correct=correct,
        total=len(items),
        max_new_tokens=max_new_tokens,
        generated_tokens=sum(len(ids) for ids in generated),
        predictions=predictions,
    )

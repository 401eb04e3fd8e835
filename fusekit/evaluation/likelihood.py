"""Log-likelihood of token targets, batched and streamed: the engine under bpb, perplexity
and multiple choice.

Each request is a token sequence plus the index of its first target.  Requests
are cut into windows (``windows.plan_windows``), windows from many requests are
batched together — longest first, so a batch wastes little padding — right-padded
with an attention mask, and each target's negative log-likelihood is read from
the logits of the position before it.  Right padding leaves every real
position's logits untouched in a causal model, so a request scores the same
alone or in any batch.  Requests are consumed ``buffer`` at a time, so an
iterator over a corpus of any size runs in bounded memory, and results come
back in request order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch

from fusekit.evaluation.adapters import ScorableModel, pad_batch, pad_id
from fusekit.evaluation.windows import Window, plan_windows


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``ids[first_target:]``, each token given all (or a window of) the tokens before it."""

    ids: Sequence[int]
    first_target: int


@dataclass(frozen=True)
class SequenceScore:
    """Summed negative log-likelihood (nats) of a request's targets."""

    nats: float
    n_targets: int
    greedy: bool
    """True when every target was the model's most likely next token (ties count as greedy)."""

    @property
    def logprob(self) -> float:
        return -self.nats


#: Positions whose full-vocabulary log-softmax is held at once: 1024 x 262k fp32 is 1 GiB,
#: where a 4096-token window of Gemma-3 done in one piece would be 4 GiB.
ROWS_PER_CHUNK = 1024
#: Logits of one batch are capped to about this many bytes (the batch shrinks to fit).
LOGITS_BUDGET = 1 << 30


def window_nll(
    logits: torch.Tensor, tokens: Sequence[int], score_from: int, rows: int = ROWS_PER_CHUNK
) -> tuple[float, int, bool]:
    """NLL of ``tokens[score_from:]`` given the logits ``[len(tokens), vocab]`` of one window.

    The logits at position ``j - 1`` predict token ``j``.  Log-softmax runs in
    float32 at least, whatever the model's dtype, so bf16 models do not lose
    the small differences bits per byte measures; it runs ``rows`` positions at a
    time, so a long window of a large vocabulary never needs its whole fp32 copy.
    """
    n = len(tokens)
    if score_from < 1 or score_from >= n:
        return 0.0, 0, True
    dtype = torch.promote_types(logits.dtype, torch.float32)
    targets = torch.tensor(list(tokens[score_from:n]), dtype=torch.long, device=logits.device)
    total, greedy = 0.0, True
    for a in range(score_from - 1, n - 1, rows):
        b = min(a + rows, n - 1)
        log_probs = torch.log_softmax(logits[a:b].to(dtype), dim=-1)
        picked = log_probs.gather(-1, targets[a - score_from + 1 : b - score_from + 1, None])
        greedy = greedy and bool((picked.squeeze(-1) >= log_probs.max(dim=-1).values).all())
        total += float(-picked.double().sum())
    return total, n - score_from, greedy


def _batches(work: list[tuple[int, Window]], batch_size: int, vocab: int) -> list[list[Any]]:
    """Longest-first batches of at most ``batch_size`` windows whose logits fit the budget."""
    tokens_per_batch = max(1, LOGITS_BUDGET // (4 * max(vocab, 1)))
    batches: list[list[Any]] = []
    for item in work:
        longest = batches[-1][0][1].end - batches[-1][0][1].begin if batches else 0
        if (
            batches
            and len(batches[-1]) < batch_size
            and (len(batches[-1]) + 1) * longest <= tokens_per_batch
        ):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches


def _score_chunk(
    model: ScorableModel,
    requests: list[ScoreRequest],
    *,
    max_length: int,
    stride: int | None,
    batch_size: int,
    pad: int,
) -> list[SequenceScore]:
    work: list[tuple[int, Window]] = [
        (index, window)
        for index, request in enumerate(requests)
        for window in plan_windows(len(request.ids), request.first_target, max_length, stride)
    ]
    work.sort(key=lambda item: item[1].end - item[1].begin, reverse=True)
    nats = [0.0] * len(requests)
    counts = [0] * len(requests)
    greedy = [True] * len(requests)
    for batch in _batches(work, batch_size, len(model.tokenizer)):
        sequences = [list(requests[i].ids[w.begin : w.end]) for i, w in batch]
        input_ids, attention_mask = pad_batch(sequences, pad, left=False, device=model.device)
        logits = model.logits(input_ids, attention_mask)
        for row, ((index, window), tokens) in enumerate(zip(batch, sequences, strict=True)):
            value, n_targets, is_greedy = window_nll(
                logits[row, : len(tokens)], tokens, window.score_from - window.begin
            )
            nats[index] += value
            counts[index] += n_targets
            greedy[index] = greedy[index] and is_greedy
    return [
        SequenceScore(nats=n, n_targets=c, greedy=g)
        for n, c, g in zip(nats, counts, greedy, strict=True)
    ]


def score_requests(
    model: ScorableModel,
    requests: Iterable[ScoreRequest],
    *,
    max_length: int,
    stride: int | None = None,
    batch_size: int = 8,
    buffer: int | None = None,
) -> Iterator[SequenceScore]:
    """One ``SequenceScore`` per request, in order; see the module docstring."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    buffer = buffer or batch_size * 32
    pad = pad_id(model.tokenizer)
    iterator = iter(requests)
    while chunk := list(islice(iterator, buffer)):
        yield from _score_chunk(
            model, chunk, max_length=max_length, stride=stride, batch_size=batch_size, pad=pad
        )

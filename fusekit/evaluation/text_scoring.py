"""Bits per byte and perplexity of a model over a stream of texts.

A text is a string (scored whole, after the tokenizer's scoring prefix) or a
``(context, target)`` pair such as a prompt and its completion (only the target
is scored and counted, conditioned on the context) — see
``tokenization.scoring_sequence`` for the exact token rule and
``windows.plan_windows`` for long texts.  A ``Templated`` item is a span of a
conversation rendered in a chat template (``conversations``): the template wrote
its whole sequence, so no scoring prefix goes in front.  Bits per byte divides by
the UTF-8 bytes of the scored text; perplexity by the number of scored tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fusekit.evaluation.adapters import as_scorable, resolve_max_length
from fusekit.evaluation.conversations import Templated
from fusekit.evaluation.likelihood import ScoreRequest, score_requests
from fusekit.evaluation.metrics import bits_per_byte, perplexity
from fusekit.evaluation.tokenization import encode_plain, scoring_prefix, scoring_sequence
from fusekit.log import bars_disabled

TextItem = str | tuple[str, str] | Templated


@dataclass
class TextScore:
    """Totals over a corpus; ``bpb`` and ``perplexity`` are derived from them."""

    nats: float = 0.0
    tokens: int = 0
    bytes: int = 0
    documents: int = 0
    max_length: int = 0
    stride: int | None = None

    @property
    def bpb(self) -> float:
        return bits_per_byte(self.nats, self.bytes)

    @property
    def perplexity(self) -> float:
        return perplexity(self.nats, self.tokens)


def _progress(items: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="doc", leave=False, disable=bars_disabled())


def score_texts(
    model: Any,
    texts: Iterable[TextItem],
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> TextScore:
    """Score every text; works on an iterator of any length in bounded memory.

    ``max_length`` defaults to the model's context (capped, see
    ``adapters.resolve_max_length``); ``stride`` defaults to ``max_length - 1``
    (disjoint windows).
    """
    scorable = as_scorable(model, tokenizer)
    window = resolve_max_length(scorable, max_length)
    prefix = scoring_prefix(scorable.tokenizer)
    totals = TextScore(max_length=window, stride=stride)

    def requests() -> Iterator[ScoreRequest]:
        for item in _progress(texts, progress, "scoring"):
            if isinstance(item, Templated):
                context_ids = encode_plain(scorable.tokenizer, item.context)
                target_ids = encode_plain(scorable.tokenizer, item.target)
                ids, first_target = context_ids + target_ids, max(len(context_ids), 1)
                scored_text = item.target
            else:
                context, target = ("", item) if isinstance(item, str) else item
                ids, first_target, scored_text = scoring_sequence(
                    scorable.tokenizer, context, target, prefix
                )
            totals.documents += 1
            totals.bytes += len(scored_text.encode("utf-8"))
            yield ScoreRequest(ids=ids, first_target=first_target)

    for score in score_requests(
        scorable, requests(), max_length=window, stride=stride, batch_size=batch_size
    ):
        totals.nats += score.nats
        totals.tokens += score.n_targets
    return totals

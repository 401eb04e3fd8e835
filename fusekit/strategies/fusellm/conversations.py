"""FuseLLM on conversations: every model reads a conversation in its own chat template.

A chat model's next-token distribution means something only in the format it was
tuned on, so FuseLLM cannot hand every model the same text here, as it does for
plain text: the target reads the conversation rendered in its template (the one
it trains in, with the same tokens and labels as fine-tuning on it), and each
source reads it rendered in *its* template (its tokenizer's, or the recipe's
``source_chat_templates``).  The texts differ only in the template's own text
(role headers, turn delimiters, a BOS); each message's content appears in both,
verbatim (a template may trim surrounding whitespace, so the stripped content is
what is located: ``content_spans``).

**Alignment through the content spans.**  A token of either text is placed in
the target text's byte coordinates when it lies inside a message's content
(shifted by where that content sits in each text), or — a template token that
ends exactly where a content starts — at that content's start, zero width: it
has read everything before the content, and the next token is the content's
first.  Every other token (template text, a token that straddles content and
template, a piece of a character split over tokens other than its last) has no
place.  A target position is then paired with the source
position at the very same place, as ``offsets`` alignment pairs tokens of one
text, and only when both models go on to read content: a position that
predicts a template token (the end of a turn, the next role header) would be
taught the source's own delimiter, mapped onto an unrelated target token.  Such
positions, and every template position, take the fallback (the gold token), and
fusion applies only where the loss does (the labels of the target's template).
The pairing is exact inside content whatever ``align`` says; ``align`` still
chooses how the sources' top-k candidates are mapped onto the target vocabulary
(MinED, or exact matches for ``em``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusekit.data.chat import Conversation, Renderer
from fusekit.errors import DataError
from fusekit.strategies.fusellm.align import offsets_match
from fusekit.strategies.fusellm.data import Encoding, _char_to_byte, byte_spans

#: A byte range of one message's content in a rendered text, or None when not found.
Content = tuple[int, int] | None


@dataclass
class ConversationExample:
    """One conversation as one model reads it."""

    encoding: Encoding
    content: list[Content]


#: Stands in for one message's content to find where a template puts it.
_MARK = "FUSEKITCONTENTMARK"


def content_spans(renderer: Renderer, where: str, conv: Conversation, text: str) -> list[Content]:
    """Byte range of each message's stripped content in ``text`` (the full rendering).

    Each message is found by rendering the conversation with its content replaced by a
    marker: the text before the marker is the text before that content (the other
    messages are the same), wherever the template puts it (Gemma folds the system prompt
    into the first user turn) and whatever it writes around it, so a short content that
    also occurs in a role header or a delimiter is never taken from there.  A template
    may trim the content; a message it drops, or cannot render with the marker, is None.
    """
    to_byte = _char_to_byte(text)
    out: list[Content] = []
    for k, message in enumerate(conv.messages):
        body = message["content"].strip()
        marked = [dict(m) for m in conv.messages]
        marked[k]["content"] = _MARK
        try:
            at = renderer.render(where, marked).find(_MARK) if body else -1
        except DataError:
            at = -1
        if at >= 0 and not text.startswith(body, at):
            lead = len(message["content"]) - len(message["content"].lstrip())
            at = at + lead if text.startswith(body, at + lead) else -1
        out.append(None if at < 0 else (int(to_byte[at]), int(to_byte[at + len(body)])))
    return out


def _encoding(tokenizer: Any, text: str, ids: Sequence[int], offsets: Sequence[Any]) -> Encoding:
    spans = byte_spans(tokenizer, text, ids, offsets)
    covered = int((spans[1:, 1] - spans[1:, 0]).clip(min=0).sum()) if len(ids) > 1 else 0
    return Encoding(np.asarray(ids, dtype=np.int64), spans, max(covered, 1))


def target_example(
    renderer: Renderer, where: str, conv: Conversation, loss_on: Any, seq_len: int
) -> tuple[ConversationExample, np.ndarray]:
    """The target's tokens (exactly fine-tuning's, ``Renderer.tokens``) and which of them
    carry the loss."""
    tokens = renderer.tokens(where, conv, loss_on, seq_len)
    enc = _encoding(renderer.tokenizer, tokens.text, tokens.ids, tokens.offsets)
    scored = np.asarray(tokens.labels) != -100
    return ConversationExample(enc, content_spans(renderer, where, conv, tokens.text)), scored


def source_example(
    renderer: Renderer,
    where: str,
    conv: Conversation,
    max_len: int,
    scored: Sequence[bool] | None = None,
) -> ConversationExample:
    """A source's tokens of the conversation rendered in its template (which writes its
    own BOS where it has one: no specials are added).

    ``scored`` (per message, ``scored_messages``) sets what the source's sequence CE
    counts — MinCE's choice and AvgCE's weights: the predictions of tokens inside the
    contents the target's loss scores, and the bytes of those tokens.  Every source then
    is compared on the same text; over the whole rendering a template with long, easily
    predicted headers would look like the better source.  A source that reads none of
    those contents (cut by ``max_len``) counts its whole text.
    """
    text = renderer.render(where, conv.messages)
    enc = renderer.tokenizer(
        text, add_special_tokens=False, truncation=True, max_length=max_len,
        return_offsets_mapping=True,
    )  # fmt: skip
    encoding = _encoding(renderer.tokenizer, text, enc["input_ids"], enc["offset_mapping"])
    read = ConversationExample(encoding, content_spans(renderer, where, conv, text))
    if scored is not None:
        inside = _inside(encoding.spans, read.content, scored)
        inside[0] = False  # token 0 is never predicted (``Encoding.n_bytes``)
        if inside.any():
            spans = encoding.spans
            encoding.counted = np.append(inside[1:], False)
            encoding.n_bytes = max(int((spans[inside, 1] - spans[inside, 0]).sum()), 1)
    return read


def _inside(spans: np.ndarray, content: Sequence[Content], chosen: Sequence[bool]) -> np.ndarray:
    """Whether each token lies inside (and covers bytes of) a chosen message's content."""
    out = np.zeros(len(spans), dtype=bool)
    for span, on in zip(content, chosen, strict=True):
        if on and span is not None:
            out |= (spans[:, 0] >= span[0]) & (spans[:, 1] <= span[1]) & (spans[:, 1] > spans[:, 0])
    return out


def scored_messages(target: ConversationExample, scored: np.ndarray) -> list[bool]:
    """Per message, whether the target's loss scores a token of its content."""
    spans = target.encoding.spans
    return [
        bool((_inside(spans, [span], [True]) & scored[: len(spans)]).any())
        for span in target.content
    ]


def placed(spans: np.ndarray, own: Sequence[Content], target: Sequence[Content]) -> np.ndarray:
    """Each token's byte range in the target text, or ``(-1, -1)`` where it has no place
    (see the module docstring)."""
    out = np.full((len(spans), 2), -1, dtype=np.int64)
    # Pieces of one character split over several tokens may all carry the character's
    # span (offsets say no finer): only the last, which has read the whole character,
    # has a place; the others would pair by order with pieces split differently.
    partial = np.zeros(len(spans), dtype=bool)
    partial[:-1] = (spans[:-1] == spans[1:]).all(axis=1) & (spans[:-1, 1] > spans[:-1, 0])
    for mine, theirs in zip(own, target, strict=True):
        if mine is None or theirs is None:
            continue
        (a, b), shift = mine, theirs[0] - mine[0]
        inside = (spans[:, 0] >= a) & (spans[:, 1] <= b) & (spans[:, 1] > spans[:, 0]) & ~partial
        out[inside] = spans[inside] + shift
        before = (spans[:, 1] == a) & (spans[:, 0] < a) & ~partial  # the header's last token
        out[before] = theirs[0]
    return out


def _content_next(places: np.ndarray) -> np.ndarray:
    """Whether the token after each one lies inside a content (its place has width)."""
    out = np.zeros(len(places), dtype=bool)
    out[:-1] = (places[1:, 0] >= 0) & (places[1:, 1] > places[1:, 0])
    return out


def _unplaced(places: np.ndarray, side: int) -> np.ndarray:
    """Tokens without a place get keys of their own: ``(side, -position)``, ``side``
    negative and different per side, so they never pair with anything."""
    out = places.copy()
    none = np.flatnonzero(places[:, 0] < 0)
    out[none, 0], out[none, 1] = side, -none
    return out


def align_conversation(source: ConversationExample, target: ConversationExample) -> np.ndarray:
    """Source position per target position, ``-1`` where the target falls back."""
    src = placed(source.encoding.spans, source.content, target.content)
    tgt = placed(target.encoding.spans, target.content, target.content)
    hits = offsets_match(_unplaced(src, -2), _unplaced(tgt, -3))
    # both models must go on to read content: else they would predict their own delimiters
    keep = _content_next(tgt) & (hits >= 0)
    keep[keep] &= _content_next(src)[hits[keep]]
    return np.where(keep, hits, -1)


def content_next(target: ConversationExample) -> np.ndarray:
    """Per target position, whether the token after it lies inside a message's content."""
    return _content_next(placed(target.encoding.spans, target.content, target.content))


def aligned_counts(
    align: np.ndarray, scored: np.ndarray | None, content: np.ndarray | None = None
) -> np.ndarray:
    """``[[hits, total], ...]`` over the target's positions with a next token, those whose
    prediction carries the loss (``scored``, None: all), and — with ``content``
    (``content_next``) — those of the loss's that predict a content token (not the
    template's end of turn, which no other template writes); a hit has a source position."""
    n = len(align)
    every = np.arange(max(n - 1, 0))
    loss = every if scored is None else np.flatnonzero(np.asarray(scored[1:n], dtype=bool))
    on_content = loss[np.asarray(content, dtype=bool)[loss]] if content is not None else loss[:0]
    hit = np.asarray(align) >= 0
    return np.array([[int(hit[w].sum()), len(w)] for w in (every, loss, on_content)])


def content_share(
    aligned: Sequence[np.ndarray],
    targets: Sequence[ConversationExample],
    scored: Sequence[np.ndarray | None],
) -> float:
    """Share of the loss positions that predict a content token that have a source
    position: what the templates cost the alignment, comparable with the share on the
    same contents as plain text."""
    counts = (aligned_counts(a, m, content_next(t))[2]
              for a, t, m in zip(aligned, targets, scored, strict=True))  # fmt: skip
    hits, total = sum(counts, np.zeros(2, dtype=np.int64))
    return int(hits) / max(int(total), 1)

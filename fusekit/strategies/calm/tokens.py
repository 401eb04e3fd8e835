"""Text ↔ tokens for anchor and augment models that do not share a tokenizer.

Each model tokenises the same text itself with its fast tokenizer and the
character end offsets of its tokens become mask keys (see ``masks``).

During generation the anchor produces tokens and the text grows; the augment
must follow.  Re-tokenising the whole text every step would be exact but costs
O(text) per token, so the augment re-tokenises only a *tail window*: from the
start of its ``lookback``-th last committed token to the end of the text.  The
window's tokens are accepted from the first one that coincides exactly (id,
start, end) with a committed token — a synchronisation point, which skips
tokens that differ only because the window starts mid-context (e.g. a
SentencePiece ``▁`` prefix).  The committed tokens before that point are kept;
the longest common prefix of old and new token lists says how much of the
augment's KV cache and cross-attention memory to keep.  If no synchronisation
point exists (one very long word), the whole text is re-tokenised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Tokens:
    """One model's tokens of one text, with character spans; ``n_prefix`` leading specials."""

    ids: list[int]
    starts: list[int]
    ends: list[int]
    n_prefix: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def common_prefix(self, other: Tokens) -> int:
        n = 0
        for a, b in zip(
            zip(self.ids, self.starts, self.ends, strict=False),
            zip(other.ids, other.starts, other.ends, strict=False),
            strict=False,
        ):
            if a != b:
                break
            n += 1
        return n


def encode_text(tokenizer: Any, text: str, *, add_special_tokens: bool = True) -> Tokens:
    """Tokenise ``text`` with offsets; trailing zero-width specials (EOS) are dropped.

    Trailing specials would only ever be invalid memory positions (they carry no
    text), and dropping them keeps prompt tokenisation equal to what the tail
    re-tokeniser produces during generation.
    """
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    spans = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    while ids and spans[-1][1] <= spans[-1][0] and len(ids) > _leading_specials(spans):
        ids.pop()
        spans.pop()
    return Tokens(
        ids=ids,
        starts=[s for s, _ in spans],
        ends=[e for _, e in spans],
        n_prefix=_leading_specials(spans),
    )


def _leading_specials(spans: list[tuple[int, int]]) -> int:
    n = 0
    for s, e in spans:
        if e > s:
            break
        n += 1
    return n


def retokenize_tail(tokenizer: Any, text: str, committed: Tokens, lookback: int = 4) -> Tokens:
    """The tokens of ``text`` (which extends the committed text), re-tokenising only its tail."""
    n = len(committed)
    first = max(committed.n_prefix, n - lookback)
    if first >= n:
        return encode_text(tokenizer, text)
    base = committed.starts[first]
    enc = tokenizer(text[base:], add_special_tokens=False, return_offsets_mapping=True)
    window = [
        (int(i), int(s) + base, int(e) + base)
        for i, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=False)
    ]
    old = list(zip(committed.ids, committed.starts, committed.ends, strict=False))
    index = {tok: k for k, tok in enumerate(old[first:], start=first)}
    for j, tok in enumerate(window):
        k = index.get(tok)
        if k is not None:
            ids = committed.ids[:k] + [t[0] for t in window[j:]]
            starts = committed.starts[:k] + [t[1] for t in window[j:]]
            ends = committed.ends[:k] + [t[2] for t in window[j:]]
            return Tokens(ids=ids, starts=starts, ends=ends, n_prefix=committed.n_prefix)
    return encode_text(tokenizer, text)


def decoded_ends(
    tokenizer: Any, ids: list[int], start: int = 0, prev: list[int] | None = None
) -> list[int]:
    """End offset of each token as ``len(decode(ids[:t+1]))`` (skipping specials).

    This is how generated tokens get character positions: the anchor's text is
    whatever its tokens decode to.  ``prev`` (ends of ``ids[:start]``) is reused.
    """
    ends = list(prev or [])[:start]
    for t in range(start, len(ids)):
        ends.append(len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True)))
    return ends


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (then positions are the mask keys)."""
    if a is None or b is None:
        return True
    if a is b:
        return True
    try:
        if a.get_vocab() != b.get_vocab():
            return False
        probe = "Hello world, 12 + 34 = 46!\n  ünïcode"
        return list(a(probe)["input_ids"]) == list(b(probe)["input_ids"])
    except Exception:  # tokenizers without get_vocab: compare a probe only
        return False

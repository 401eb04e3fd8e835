"""Text chunks that every tokenizer reads identically, and their per-tokenizer encodings.

FuseLLM compares models token by token on *the same text*, so the unit of data
is a piece of text, not a block of token ids: documents are joined into one
stream, cut at the target tokenizer's token boundaries into pieces of about
``seq_len`` target tokens, and each model then tokenises each piece itself.

Every encoding also carries byte spans: where in the piece's UTF-8 bytes each
token lies.  They come from the bytes each token stands for (see ``vocab``),
which is exact for lossless tokenizers and needs none of the offset quirks of
``return_offsets_mapping`` (trimmed leading spaces, zero-width pieces of split
characters); special tokens get a zero-width span where they sit.  When the
tokens do not reproduce the text (normalisers, unknown tokens) the spans fall
back to the tokenizer's own offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusekit.data.causal_lm import chunk_texts as chunk_texts  # shared with CALM
from fusekit.strategies.fusellm.vocab import token_table


@dataclass
class Encoding:
    """One model's tokenisation of one chunk."""

    ids: np.ndarray  # [L] int64
    spans: np.ndarray  # [L, 2] int64 byte offsets into the chunk's UTF-8 text
    n_bytes: int  # bytes covered by predicted tokens (positions 1..L-1): the per-byte CE unit
    # positions whose prediction of the next token counts in the sequence CE (None: all);
    # a source's conversation counts the scored contents only (``conversations``)
    counted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _char_to_byte(text: str) -> np.ndarray:
    """``table[c]`` = byte offset of character ``c`` (length ``len(text) + 1``)."""
    widths = np.fromiter((len(ch.encode("utf-8")) for ch in text), dtype=np.int64, count=len(text))
    return np.concatenate([[0], np.cumsum(widths)])


def byte_spans(
    tokenizer: Any, text: str, ids: Sequence[int], offsets: Sequence[Sequence[int]]
) -> np.ndarray:
    """Byte span of every token; see the module docstring for the rules."""
    table = token_table(tokenizer)
    data = text.encode("utf-8")
    ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    inside = (ids_arr >= 0) & (ids_arr < len(table))
    lengths = np.where(inside, table.canon_lengths[np.where(inside, ids_arr, 0)], -1)
    has_bytes = lengths >= 0  # specials and unknown ids stand for no bytes
    lengths = np.where(has_bytes, lengths, 0)
    joined = "".join(table.canon_array[ids_arr[has_bytes]]).encode("latin-1")
    if data.startswith(joined):  # equal, or a prefix when truncated
        shift = 0
    elif joined[:1] == b" " and data.startswith(joined[1:]):
        shift = 1  # SentencePiece's dummy prefix: a space that is not in the text
    else:
        return _spans_from_offsets(text, ids, offsets, table.special)
    ends = np.cumsum(lengths) - shift
    starts = np.maximum(ends - lengths, 0)
    return np.stack([starts, np.maximum(ends, 0)], axis=1)


def _spans_from_offsets(
    text: str, ids: Sequence[int], offsets: Sequence[Sequence[int]], special: np.ndarray
) -> np.ndarray:
    to_byte = _char_to_byte(text)
    spans = np.zeros((len(ids), 2), dtype=np.int64)
    last = 0
    for k, (i, (a, b)) in enumerate(zip(ids, offsets, strict=True)):
        if 0 <= int(i) < len(special) and special[int(i)]:
            spans[k] = (last, last)
            continue
        spans[k] = (to_byte[a], to_byte[b])
        last = int(to_byte[b])
    return spans


def encode_chunks(
    tokenizer: Any, chunks: Sequence[str], max_len: int, batch: int = 256
) -> list[Encoding]:
    """Tokenise every chunk (with the tokenizer's specials), truncated to ``max_len`` tokens."""
    out: list[Encoding] = []
    for start in range(0, len(chunks), batch):
        part = list(chunks[start : start + batch])
        enc = tokenizer(
            part,
            add_special_tokens=True,
            truncation=True,
            max_length=max_len,
            return_offsets_mapping=True,
        )
        for text, ids, offsets in zip(part, enc["input_ids"], enc["offset_mapping"], strict=True):
            spans = byte_spans(tokenizer, text, ids, offsets)
            covered = int((spans[1:, 1] - spans[1:, 0]).clip(min=0).sum()) if len(ids) > 1 else 0
            out.append(Encoding(np.asarray(ids, dtype=np.int64), spans, max(covered, 1)))
    return out


def scored_positions(encoding: Encoding, text: str, prompt_chars: int) -> np.ndarray | None:
    """Which target tokens carry the loss: those whose bytes end after the chunk's first
    ``prompt_chars`` characters (a token straddling the boundary counts as answer); None
    (every token) when the chunk has no prompt."""
    if prompt_chars <= 0:
        return None
    prompt_bytes = len(text[:prompt_chars].encode("utf-8"))
    return np.asarray(encoding.spans[:, 1] > prompt_bytes)

"""Chunks lose no text; byte spans locate every token; the collator pads consistently."""

from __future__ import annotations

from typing import Any

import numpy as np

from fusekit.strategies.fusellm.batching import FusionCollator, FusionDataset
from fusekit.strategies.fusellm.data import chunk_texts, encode_chunks
from fusekit.strategies.fusellm.examples import in_memory
from tests.fusellm.conftest import CORPUS


def test_chunks_cover_the_stream_exactly(bpe: Any) -> None:
    docs = CORPUS[:8]
    chunks = chunk_texts(docs, bpe, 20)
    assert "".join(chunks) == "\n\n".join(docs)
    lengths = [len(bpe(c, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert max(lengths) <= 19 + 19 // 4 + 2  # ~seq_len minus BOS; a short tail may join the last


def test_byte_spans_reproduce_the_text(bpe: Any, sp: Any, wp: Any) -> None:
    text = "def f(x):\n    return 'café'  # naïve\n"
    data = text.encode()
    for tok in (bpe, sp):
        enc = encode_chunks(tok, [text], 200)[0]
        pieces = [data[a:b] for a, b in enc.spans]
        assert b"".join(pieces) == data  # contiguous, complete, BOS zero-width
        assert enc.spans[0].tolist() == [0, 0]
        assert enc.n_bytes == len(data)
    # SentencePiece's dummy prefix is not text: the first word starts at byte 0.
    first = encode_chunks(sp, ["hello world"], 20)[0]
    assert first.spans[1][0] == 0
    # WordPiece drops whitespace: spans come from its offsets, still inside the text.
    enc = encode_chunks(wp, [text], 200)[0]
    assert all(0 <= a <= b <= len(data) for a, b in enc.spans)
    assert np.all(np.diff(enc.spans[:, 0]) >= 0)


def test_truncation_keeps_spans_consistent(bpe: Any) -> None:
    text = CORPUS[1]
    enc = encode_chunks(bpe, [text], 8)[0]
    assert len(enc) == 8
    assert enc.spans[-1][1] < len(text.encode())


def test_collator_pads_target_and_sources(bpe: Any, sp: Any) -> None:
    chunks = chunk_texts(CORPUS[:6], bpe, 24)[:3]
    tgt = encode_chunks(bpe, chunks, 24)
    src = encode_chunks(sp, chunks, 96)
    align = [np.full(len(t), -1) for t in tgt]
    ds = FusionDataset(in_memory(tgt, [(src, align)]), [None])
    batch = FusionCollator(pad_id=0, source_pad_ids=[0])([ds[i] for i in range(3)])
    width = max(len(t) for t in tgt)
    assert batch["input_ids"].shape == (3, width)
    assert (batch["labels"] == -100).sum() == (batch["attention_mask"] == 0).sum()
    s = batch["sources"][0]
    assert s["align"].shape == (3, width) and s["input_ids"].shape[0] == 3
    assert s["attention_mask"].sum() == sum(len(e) for e in src)
    assert batch["bytes_per_token"].shape == (3,)

"""FuseLLM's training examples, made once and kept in the Arrow data cache.

An example is one text chunk (or one conversation) as the target and every source
read it: the target's ids, which of them carry the loss, and per source its ids,
the bytes its predictions cover, which of its predictions its cross-entropy counts,
and its alignment (source position per target position, ``-1`` for none).  They are
made a batch of chunks at a time from records read one at a time, written to one
Arrow file keyed by everything that decides them, and read memory-mapped by
training and by the offline extraction: preparing a corpus holds a batch, never the
corpus, and a second run over the same data and models (a sweep over ``lam``, a
resume, the other ranks) reads the file instead of tokenising and aligning again.

Order: text chunks first (the documents joined and cut on the target's tokens),
then prompt/completion records, then conversations — the order the top-k stores
were keyed by before the cache existed, so existing stores stay valid.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fusekit.data.chat import Renderer, conversation, is_conversational
from fusekit.errors import DataError
from fusekit.strategies.fusellm.conversations import (
    align_conversation,
    aligned_counts,
    content_next,
    scored_messages,
    source_example,
    target_example,
)
from fusekit.strategies.fusellm.data import Encoding, encode_chunks, scored_positions
from fusekit.strategies.fusellm.prepare import align_chunk
from fusekit.strategies.fusellm.vocab import TokenTable

#: Bumped when the same inputs make other examples.
SHAPE = "fusellm-examples-1"
#: Chunks tokenised and aligned at once.
BATCH = 256


@dataclass
class Reader:
    """One model's side of the data: its tokenizer and token table, the longest it
    reads, and — made on the first conversation — its chat template's renderer."""

    tokenizer: Any
    table: TokenTable
    max_len: int
    template: Callable[[], str]
    vocab_map: np.ndarray | None = None  # a source's map onto the target's vocabulary
    _renderer: Renderer | None = None

    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self.tokenizer, self.template())
        return self._renderer


def schema(n_sources: int) -> pa.Schema:
    """The columns of the cached examples for ``n_sources`` sources."""
    ids, mask = pa.list_(pa.int32()), pa.list_(pa.bool_())
    fields = [
        ("input_ids", ids), ("n_bytes", pa.int64()), ("scored", mask), ("content", mask),
        ("talk", pa.bool_()),
    ]  # fmt: skip
    for n in range(n_sources):
        fields += [(f"s{n}_ids", ids), (f"s{n}_n_bytes", pa.int64()),
                   (f"s{n}_counted", mask), (f"s{n}_align", ids)]  # fmt: skip
    return pa.schema(fields)


def _list(values: np.ndarray | None) -> list[Any] | None:
    return None if values is None else np.asarray(values).tolist()


def _row(
    target: Encoding,
    scored: np.ndarray | None,
    content: np.ndarray | None,
    sources: Sequence[tuple[Encoding, np.ndarray]],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "input_ids": _list(target.ids), "n_bytes": target.n_bytes, "scored": _list(scored),
        "content": _list(content), "talk": content is not None,
    }  # fmt: skip
    for n, (enc, align) in enumerate(sources):
        row.update({f"s{n}_ids": _list(enc.ids), f"s{n}_n_bytes": enc.n_bytes,
                    f"s{n}_counted": _list(enc.counted), f"s{n}_align": _list(align)})  # fmt: skip
    return row


def in_memory(
    target: Sequence[Encoding],
    sources: Sequence[tuple[Sequence[Encoding], Sequence[np.ndarray]]],
    scored: Sequence[np.ndarray | None] | None = None,
) -> Any:
    """Examples already held (a bench, a test) in the cached examples' form: the target's
    encodings and, per source, its encodings and alignments, chunk by chunk."""
    from datasets import Dataset

    for encodings, aligned in sources:
        if len(encodings) != len(target) or len(aligned) != len(target):
            raise ValueError("every source needs an encoding and an alignment per chunk")
    masks = list(scored) if scored is not None else [None] * len(target)
    rows = [
        _row(enc, masks[k], None, [(encs[k], aligned[k]) for encs, aligned in sources])
        for k, enc in enumerate(target)
    ]
    return Dataset(pa.Table.from_pylist(rows, schema=schema(len(sources))))


def _items(data: Any, tokenizer: Any, seq_len: int, keep_prompt: bool) -> Iterator[Any]:
    """``("chunk", text, prompt_chars)`` for every text chunk and prompt/completion
    record, then ``("talk", where, conversation)`` for every conversation; each pass
    reads the records anew, one at a time."""
    from fusekit.data.causal_lm import iter_chunks, located_records

    texts = (r["text"] for _, r in located_records(data)
             if not is_conversational(r) and "text" in r)  # fmt: skip
    yield from (("chunk", chunk, 0) for chunk in iter_chunks(texts, tokenizer, seq_len))
    for _, rec in located_records(data):
        # a record with text is text, whatever else it holds (as in plain fine-tuning)
        if (
            not is_conversational(rec)
            and "text" not in rec
            and isinstance(rec.get("completion"), str)
        ):
            prompt = rec["prompt"]
            yield "chunk", prompt + rec["completion"], 0 if keep_prompt else len(prompt)
    for where, rec in located_records(data):
        if is_conversational(rec):
            yield "talk", where, conversation(where, rec)


def example_rows(
    data: Any,
    target: Reader,
    sources: Sequence[Reader],
    *,
    align: str,
    seq_len: int,
    loss_on: Any,
) -> Generator[dict[str, Any], None, tuple[int, int]]:
    """The rows of ``schema(len(sources))``, a batch of chunks at a time; refuses data
    that holds no example.  Returns (made, kept): a chunk with no trained token within
    ``seq_len`` is left out, and ``cached_rows`` says so (or refuses the data when none
    is kept) on every run, cached or not."""
    items = _items(data, target.tokenizer, seq_len, keep_prompt=loss_on == "all")
    made = kept = 0
    for batch in iter(lambda: list(itertools.islice(items, BATCH)), []):
        made += len(batch)
        chunks = [(text, n) for kind, text, n in batch if kind == "chunk"]
        talks = [(where, conv) for kind, where, conv in batch if kind == "talk"]
        for row in itertools.chain(_chunk_rows(chunks, target, sources, align, seq_len),
                                   _talk_rows(talks, target, sources, seq_len, loss_on)):  # fmt: skip
            kept += 1
            yield row
    if not made:
        raise DataError("fusellm: the training data holds no text records")
    return made, kept


def _chunk_rows(
    chunks: list[tuple[str, int]],
    target: Reader,
    sources: Sequence[Reader],
    align: str,
    seq_len: int,
) -> Iterator[dict[str, Any]]:
    if not chunks:
        return
    texts = [text for text, _ in chunks]
    encs = encode_chunks(target.tokenizer, texts, seq_len)
    masks = [scored_positions(e, text, n) for e, (text, n) in zip(encs, chunks, strict=True)]
    # a completion cut off by seq_len leaves a row without a label (a 0/0 loss)
    keep = [k for k, m in enumerate(masks) if m is None or bool(m[1:].any())]
    read = [encode_chunks(s.tokenizer, [texts[k] for k in keep], s.max_len) for s in sources]
    for j, k in enumerate(keep):
        pairs = []
        for s, encodings in zip(sources, read, strict=True):
            assert s.vocab_map is not None  # every source has one
            pairs.append((encodings[j], align_chunk(align, encodings[j], encs[k], s.vocab_map,
                                                    s.table, target.table)))  # fmt: skip
        yield _row(encs[k], masks[k], None, pairs)


def _talk_rows(
    talks: list[tuple[str, Any]],
    target: Reader,
    sources: Sequence[Reader],
    seq_len: int,
    loss_on: Any,
) -> Iterator[dict[str, Any]]:
    """Each conversation in the target's template and in every source's own; positions
    align through the messages' contents (``conversations``)."""
    for where, conv in talks:
        example, mask = target_example(
            target.renderer(), where, conv, loss_on or conv.default_loss_on, seq_len
        )
        if not mask[1:].any():  # its trained turns lie past seq_len
            continue
        wanted = scored_messages(example, mask)
        pairs = []
        for s in sources:
            read = source_example(s.renderer(), where, conv, s.max_len, wanted)
            pairs.append((read.encoding, align_conversation(read, example)))
        yield _row(example.encoding, mask, content_next(example), pairs)


class Column(Sequence[Any]):
    """One column of the cached examples as a sequence of arrays (None for a null), read
    from the memory-mapped file a slice at a time: what the top-k extraction walks."""

    def __init__(self, rows: Any, name: str, dtype: Any = np.int64) -> None:
        self.rows, self.name, self.dtype = rows.select_columns([name]), name, dtype

    def __len__(self) -> int:
        return len(self.rows)

    def _array(self, value: Any) -> Any:
        return None if value is None else np.asarray(value, dtype=self.dtype)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._array(v) for v in self.rows[index][self.name]]
        return self._array(self.rows[int(index)][self.name])

    def __iter__(self) -> Iterator[Any]:
        for batch in self.rows.iter(batch_size=1024):
            yield from (self._array(v) for v in batch[self.name])


@dataclass
class Summary:
    """How many examples are text chunks and conversations, and per source the share of
    target positions (with a next token) that have a source position: among all of
    them, among the loss's, and — with conversations — among the loss's positions that
    predict a content token (not a template's end of turn, which no other template
    writes): what the templates cost the alignment, comparable with the share on the
    same contents as plain text."""

    chunks: int
    conversations: int
    shares: list[dict[str, float]]


def summary(rows: Any, n_sources: int) -> Summary:
    """``Summary`` of the examples: for a cache entry, kept beside its Arrow file once
    counted (the entry never changes, and counting walks every row); else counted."""
    files = getattr(rows, "cache_files", None)
    kept = Path(files[0]["filename"]).with_name("summary.json") if files else None
    if kept is not None and kept.is_file():
        return Summary(**json.loads(kept.read_text()))
    found = _count(rows, n_sources)
    if kept is not None:
        staged = kept.with_name(f".summary-{os.getpid()}.json")
        staged.write_text(json.dumps(asdict(found)))
        os.replace(staged, kept)  # whole or absent, whichever rank writes it
    return found


def _count(rows: Any, n_sources: int) -> Summary:
    counts = np.zeros((n_sources, 3, 2), dtype=np.int64)
    talks = 0
    columns = ["scored", "content", *(f"s{n}_align" for n in range(n_sources))]
    for batch in rows.select_columns(columns).iter(batch_size=1024):
        for k, scored in enumerate(batch["scored"]):
            content = batch["content"][k]
            talks += content is not None
            for s in range(n_sources):
                align = np.asarray(batch[f"s{s}_align"][k], dtype=np.int64)
                counts[s] += aligned_counts(align, scored, content)
    keys = ("aligned_positions", "aligned_loss_positions", "aligned_content_positions")
    shares = [
        {key: float(counts[s, i, 0] / max(counts[s, i, 1], 1))
         for i, key in enumerate(keys[: 3 if talks else 2])}
        for s in range(n_sources)
    ]  # fmt: skip
    return Summary(len(rows) - talks, talks, shares)

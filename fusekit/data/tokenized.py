"""Training examples tokenised once, cached on disk as Arrow and read memory-mapped.

Reading a corpus into Python lists costs about 14 bytes of memory per byte of text,
in every rank, on every run.  Here the records become an Arrow table (``datasets``'
JSON reader, or a generator for the other sources), are tokenised with
``Dataset.map`` (several processes for a large corpus), and are packed in one pass
over the token column, a record batch at a time, into two Arrow files: ``blocks``
(packed text, labels implied) and ``examples`` (prompt/completion pairs and
conversations, with their labels).  The folder is keyed by what decides the
examples — the data's content, the tokenizer, the chat template, ``seq_len``,
``loss_on`` and fusekit's version — so a second run, another rank (the pipeline
builds on rank 0 first) or another strategy over the same data reads it instead
of tokenising again.  The examples equal ``CausalLMDataset``'s: the packed blocks
first, then the other examples in record order.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, Sequence, Value, concatenate_datasets, load_dataset

from fusekit import log
from fusekit.data.causal_lm import (
    document_ids,
    encode_example,
    left_out,
    load_records,
    special_prefix,
)
from fusekit.data.chat import LossOn, Renderer, is_conversational, template_text
from fusekit.data.chat import chat_template as template_for
from fusekit.data.records import readable_data_path
from fusekit.errors import DataError
from fusekit.io.cache import cache_root
from fusekit.io.hashing import data_hash
from fusekit.version import __version__

#: Bumped when the stored layout or the tokenisation rules change.
LAYOUT = 4
#: The examples made and kept, beside the Arrow files of a cache entry.
COUNTS = "counts.json"
#: Records per ``map`` batch and rows per written Arrow batch.
BATCH = 512
#: A corpus with at least this many records is tokenised in several processes.
PARALLEL_RECORDS = 20_000
_TOKENS = Features(
    {
        "ids": Sequence(Value("int32")),
        "labels": Sequence(Value("int32")),
        "packed": Value("bool"),
    }
)
_BLOCKS = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


def parts(data: Any) -> list[Any]:
    """The parts of a data reference: a list of references, else the one (records in
    memory, a list of dicts, are one part)."""
    return data if isinstance(data, list) and not (data and isinstance(data[0], dict)) else [data]


def content_key(part: Any) -> Any:
    """What identifies one data part's records: a file's content hash, else the records."""
    path = getattr(part, "path", part)
    if isinstance(path, (str, Path)):
        return data_hash(readable_data_path(Path(path)))
    if hasattr(part, "model_dump"):
        return part.model_dump(mode="json")
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()


def tokenizer_key(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab()))
    extra = json.dumps(
        [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.all_special_tokens], default=str
    )
    return hashlib.sha256((text + extra).encode()).hexdigest()


def cache_key(
    data: Any, tokenizer: Any, seq_len: int, loss_on: LossOn | None, chat_template: str | None
) -> str:
    """The cache folder's name: a hash of everything that decides the examples."""
    return _entry_key({
        "data": [content_key(p) for p in parts(data)],
        "tokenizer": tokenizer_key(tokenizer),
        "chat_template": template_text(chat_template) or getattr(tokenizer, "chat_template", None),
        "seq_len": seq_len,
        "loss_on": loss_on,
    })  # fmt: skip


def _entry_key(payload: dict[str, Any]) -> str:
    """A cache entry's name: ``payload`` with the layout and fusekit's version, hashed."""
    text = json.dumps({"layout": LAYOUT, "fusekit": __version__, **payload}, sort_keys=True,
                      default=str)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def _building(folder: Path) -> Iterator[Path]:
    """A scratch folder beside cache entry ``folder``: what the block writes into its
    ``examples`` subfolder becomes the entry, renamed into place whole once the block
    ends without error; the scratch is removed either way."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name[:12]}-", dir=folder.parent))
    try:
        (scratch / "examples").mkdir()
        yield scratch
        _publish(scratch / "examples", folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _raw(part: Any, scratch: Path) -> Dataset:
    """One data part's records as an Arrow table; JSON Lines through ``datasets``' reader."""
    path = getattr(part, "path", part)
    if isinstance(path, (str, Path)) and Path(path).suffix == ".jsonl":
        file = readable_data_path(Path(path))
        try:
            with _quiet():
                return load_dataset(
                    "json", data_files=str(file), split="train", cache_dir=str(scratch / "raw")
                )
        except Exception:  # a schema Arrow cannot infer (mixed types): the generic reader
            pass
    return Dataset.from_list([flat_record(record) for record in load_records(part)])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No ``datasets`` bars while reading: the tokenising bar is the one that tells."""
    was_on = datasets.are_progress_bars_disabled() is False
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def flat_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record with conversations as JSON text, so one schema holds every shape (the
    generic reader's rows; ``datasets``' JSON reader keeps the file's own columns)."""
    out = {name: record.get(name) for name in ("text", "prompt", "completion")}
    for name in ("prompt", "completion"):
        if isinstance(out[name], list):
            out[name] = json.dumps(out[name])
    out["messages"] = json.dumps(record["messages"]) if "messages" in record else None
    out["talk"] = is_conversational(record)
    return out


_FIELDS = ("text", "prompt", "completion", "messages")


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """The record a row holds: its fields that are set, conversations decoded from the
    generic reader's JSON text."""
    record = {name: row[name] for name in _FIELDS if row.get(name) is not None}
    if row.get("talk"):
        record.update({k: json.loads(v) for k, v in record.items() if k != "text"})
    return record


class Encoder:
    """The ``map`` function: text to ``document_ids`` (packed later), the other records to
    ``encode_example``'s ids and labels — the same functions ``CausalLMDataset`` uses."""

    def __init__(
        self, tokenizer: Any, seq_len: int, loss_on: LossOn | None, template: str | None,
        source: str,
    ) -> None:  # fmt: skip
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.loss_on = loss_on
        self.renderer = Renderer(tokenizer, template) if template is not None else None
        self.source = source

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        rows = [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]
        texts = [i for i, r in enumerate(rows) if r.get("text") is not None]
        streams = document_ids(self.tokenizer, [rows[i]["text"] for i in texts])
        ids_out: list[list[int]] = [[] for _ in rows]
        labels_out: list[list[int]] = [[] for _ in rows]
        for i, stream in zip(texts, streams, strict=True):
            ids_out[i] = stream.tolist()
        for i, row in enumerate(rows):
            if row.get("text") is None:
                where = f"{self.source}: record {indices[i]}"
                pair = encode_example(
                    _record(row), self.tokenizer, self.seq_len, self.loss_on, self.renderer, where
                )
                if pair is not None:
                    ids_out[i], labels_out[i] = pair
        packed = [r.get("text") is not None for r in rows]
        return {"ids": ids_out, "labels": labels_out, "packed": packed}


def _write_arrow(
    path: Path, batches: Iterator[pa.RecordBatch], schema: pa.Schema = _BLOCKS
) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def _lists(values: np.ndarray, width: int) -> pa.Array:
    offsets = np.arange(0, len(values) + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int32()))


def fill_blocks(
    carry: np.ndarray, stream: np.ndarray, prefix: np.ndarray, content: int
) -> tuple[np.ndarray, np.ndarray]:
    """``stream`` appended to ``carry``, cut into blocks of ``content`` tokens, each behind
    ``prefix``: the blocks (one a row) and the tokens left over for the next ones."""
    carry = np.concatenate([carry, stream.astype(carry.dtype)])
    n = (len(carry) // content) * content
    body = carry[:n].reshape(-1, content)
    rows = np.concatenate([np.broadcast_to(prefix, (len(body), len(prefix))), body], 1)
    return rows, carry[n:]


def _pack(
    tokens: Dataset, tokenizer: Any, seq_len: int, blocks: Path, examples: Path, source: str
) -> None:
    """One pass over the token table: text streams into blocks, the rest copied over."""
    prefix = np.asarray(special_prefix(tokenizer), dtype=np.int32)
    content = max(1, seq_len - len(prefix))
    table = tokens.data.table
    carry = np.zeros(0, dtype=np.int32)
    wrote = 0

    def packed_batches() -> Iterator[pa.RecordBatch]:
        nonlocal carry, wrote
        for batch in table.to_batches(max_chunksize=BATCH * 8):
            mask = batch.column("packed")
            stream = pc.filter(batch.column("ids"), mask).flatten().to_numpy()
            rows, carry = fill_blocks(carry, stream, prefix, content)
            if not len(rows):
                continue
            wrote += len(rows)
            yield pa.record_batch(
                [
                    _lists(rows.reshape(-1), rows.shape[1]),
                    pa.nulls(len(rows), pa.list_(pa.int32())),
                ],
                schema=_BLOCKS,
            )
        if wrote == 0 and len(carry):  # shorter than one block: the stream is the block
            wrote = 1
            row = np.concatenate([prefix, carry])
            yield pa.record_batch(
                [_lists(row, len(row)), pa.nulls(1, pa.list_(pa.int32()))], schema=_BLOCKS
            )

    made = kept = 0

    def example_batches() -> Iterator[pa.RecordBatch]:
        nonlocal made, kept
        for batch in table.to_batches(max_chunksize=BATCH * 8):
            keep = pc.invert(batch.column("packed"))
            ids = pc.filter(batch.column("ids"), keep)
            labels = pc.filter(batch.column("labels"), keep)
            nonempty = pc.greater(pc.list_value_length(ids), 0)
            ids, labels = pc.filter(ids, nonempty), pc.filter(labels, nonempty)
            trains = _trains_a_token(labels)
            made, kept = made + len(ids), kept + int(trains.sum())
            yield pa.record_batch(
                [pc.filter(ids, trains), pc.filter(labels, trains)], schema=_BLOCKS
            )

    _write_arrow(blocks, packed_batches())
    _write_arrow(examples, example_batches())
    left_out(made - kept, made, seq_len, source, anything_left=bool(wrote or kept))
    # kept with the entry, so a run that reads the cache says it again
    (examples.parent / COUNTS).write_text(json.dumps({"made": made, "kept": kept}) + "\n")


def _say_cached_counts(folder: Path, seq_len: int, source: str) -> None:
    """Say the left-out examples of a cache entry, from the counts kept beside it, as
    the run that made the entry did."""
    counts = json.loads((folder / COUNTS).read_text())
    left_out(counts["made"] - counts["kept"], counts["made"], seq_len, source,
             anything_left=True)  # fmt: skip


def _trains_a_token(labels: pa.Array) -> np.ndarray:
    """``trains_a_token`` of every row of a list column, vectorised."""
    offsets = labels.offsets.to_numpy()
    flat = labels.flatten().to_numpy(zero_copy_only=False)
    scored = (flat != -100).astype(np.int64)
    starts = offsets[:-1]
    scored[starts[starts < len(flat)]] = 0  # position 0 is never predicted
    counts = np.add.reduceat(scored, starts) if len(flat) else np.zeros(len(starts), np.int64)
    return (counts > 0) & (np.diff(offsets) > 1)


def _load(folder: Path) -> Dataset:
    parts = [Dataset.from_file(str(folder / name)) for name in ("blocks.arrow", "examples.arrow")]
    dataset = concatenate_datasets([p for p in parts if len(p)] or parts[:1])
    if not len(dataset):
        raise DataError("the training data produced no examples (texts too short?)")
    return dataset


def tokenized_examples(
    data: Any,
    tokenizer: Any,
    seq_len: int,
    *,
    loss_on: LossOn | None = None,
    chat_template: str | None = None,
    model: str = "the model",
    source: str = "data",
    num_proc: int | None = None,
) -> Dataset:
    """The ``{"input_ids", "labels"}`` examples of ``data``, from the cache or made now.

    ``labels`` is None for a packed block (every position is scored; the collator
    copies the ids).  ``chat_template``, ``loss_on`` and ``num_proc`` are ``train``'s;
    the processes change how fast the cache is made, never what it holds, so they are
    not part of its key.
    """
    folder = cache_root() / "data" / cache_key(data, tokenizer, seq_len, loss_on, chat_template)
    if (folder / "examples.arrow").is_file():
        log.info(f"fusekit: {source}: tokenised examples read from the cache ({folder.name[:12]})")
        _say_cached_counts(folder, seq_len, source)
        return _load(folder)
    with _building(folder) as scratch:
        raws = [_raw(part, scratch) for part in parts(data)]
        raw = concatenate_datasets(raws) if len(raws) > 1 else raws[0]
        template = template_for(tokenizer, chat_template, model) if _any_talk(raw) else None
        wanted = num_proc or (min(os.cpu_count() or 1, 8) if len(raw) >= PARALLEL_RECORDS else 1)
        procs = min(wanted, len(raw)) if wanted > 1 else None
        log.info(f"fusekit: {source}: tokenising {len(raw):,} records"
                 + (f" in {procs} processes" if procs else ""))  # fmt: skip
        tokens = raw.map(
            Encoder(tokenizer, seq_len, loss_on, template, source), batched=True,
            batch_size=BATCH, with_indices=True, remove_columns=raw.column_names,
            features=_TOKENS, num_proc=procs, cache_file_name=str(scratch / "tokens.arrow"),
            new_fingerprint=folder.name[:40], desc="tokenising",
        )  # fmt: skip
        staged = scratch / "examples"
        _pack(tokens, tokenizer, seq_len, staged / "blocks.arrow", staged / "examples.arrow",
              source)  # fmt: skip
        del tokens, raw, raws
    return _load(folder)


def _publish(staged: Path, folder: Path) -> None:
    """Rename a finished cache entry into place; another job that made the same entry
    first wins (its files are the same), so a rename that finds it there is no error."""
    try:
        os.replace(staged, folder)
    except OSError:
        if not folder.is_dir():
            raise


def cached_rows(
    payload: dict[str, Any],
    rows: Callable[[], Generator[dict[str, Any], None, tuple[int, int]]],
    schema: pa.Schema,
    *,
    seq_len: int,
    source: str = "data",
    before: Callable[[], None] | None = None,
) -> Dataset:
    """Examples made once by ``rows()`` and kept as one Arrow file in the data cache,
    read memory-mapped: for examples of another shape than ``tokenized_examples``' (CALM's
    for augments with their own tokenizers, FuseLLM's).  ``payload`` is everything that
    decides the rows (it names the folder, with the layout and fusekit's version); the
    file is written a batch at a time into a scratch folder and renamed into place whole.
    ``before`` runs first when the rows must be made (checks that would refuse them).

    ``rows()`` returns (made, kept), the examples it made and those with a trained token
    within ``seq_len``: they are kept with the entry, so every run says the left-out
    ones, not only the run that made them, and data that keeps none is refused before
    anything is published.
    """
    key = _entry_key(payload)
    folder = cache_root() / "data" / key
    file = folder / "examples.arrow"
    if file.is_file():
        log.info(f"fusekit: {source}: tokenised examples read from the cache ({key[:12]})")
        _say_cached_counts(folder, seq_len, source)
        return Dataset.from_file(str(file))
    if before is not None:
        before()
    log.info(f"fusekit: {source}: tokenising")
    counts = {"made": 0, "kept": 0}

    def counted() -> Iterator[dict[str, Any]]:
        counts["made"], counts["kept"] = yield from rows()

    with _building(folder) as scratch:
        made = counted()
        batches = (
            pa.RecordBatch.from_pylist(chunk, schema=schema)
            for chunk in iter(lambda: list(itertools.islice(made, BATCH)), [])
        )
        _write_arrow(scratch / "examples" / "examples.arrow", batches, schema)
        left_out(counts["made"] - counts["kept"], counts["made"], seq_len, source,
                 anything_left=counts["kept"] > 0)  # fmt: skip
        (scratch / "examples" / COUNTS).write_text(json.dumps(counts) + "\n")
    return Dataset.from_file(str(file))


def _any_talk(raw: Dataset) -> bool:
    """Whether any record is a conversation: from the schema for a JSON Lines table."""
    if "talk" not in raw.column_names:
        prompt = raw.features.get("prompt")
        return "messages" in raw.column_names or (
            prompt is not None and not isinstance(prompt, Value)
        )
    return any(any(batch["talk"]) for batch in raw.select_columns(["talk"]).iter(BATCH * 8))


__all__ = [
    "BATCH",
    "Encoder",
    "cache_key",
    "cached_rows",
    "content_key",
    "fill_blocks",
    "flat_record",
    "parts",
    "tokenized_examples",
    "tokenizer_key",
]

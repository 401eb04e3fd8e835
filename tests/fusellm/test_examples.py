"""FuseLLM's examples in the Arrow data cache: the same examples the in-memory path
made, built a batch at a time from records read one at a time, read back by training."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusekit.api import run
from fusekit.data.causal_lm import iter_chunks, segments
from fusekit.strategies.fusellm.data import chunk_texts, encode_chunks, scored_positions
from fusekit.strategies.fusellm.examples import (
    Column,
    Reader,
    example_rows,
    in_memory,
    schema,
    summary,
)
from fusekit.strategies.fusellm.prepare import aligned_share, prepare_source
from fusekit.strategies.fusellm.recipe import FuseLLMRecipe
from fusekit.strategies.fusellm.vocab import map_vocab, token_table
from tests.fusellm.conftest import CORPUS
from tests.training.test_chat import CHATML, GEMMA, TALK


def _reader(tokenizer: Any, max_len: int, target: Any = None, template: str = "") -> Reader:
    vmap = map_vocab(tokenizer, target, "mined") if target is not None else None
    return Reader(tokenizer, token_table(tokenizer), max_len, lambda: template, vocab_map=vmap)


def reference_chunks(texts: list[str], tokenizer: Any, seq_len: int) -> list[str]:
    """The whole stream at once, as pieces were cut before they were cut as read: the
    documents joined by a blank line, every token start found, a cut every ``content``
    tokens, a last piece under a quarter block joined to the one before."""
    content = max(1, seq_len - tokenizer.num_special_tokens_to_add(pair=False))
    docs = [t for t in texts if t]
    text, starts = "", []
    for k, doc in enumerate(docs):
        for seg in segments(doc + ("\n\n" if k < len(docs) - 1 else "")):
            found = tokenizer(seg, add_special_tokens=False, return_offsets_mapping=True)
            starts += [len(text) + a for a, _ in found["offset_mapping"]]
            text += seg
    cuts = [0, *starts[content::content]] if starts else []
    pieces: list[str] = []
    for k, a in enumerate(cuts):
        b = cuts[k + 1] if k + 1 < len(cuts) else len(text)
        if k > 0 and k == len(cuts) - 1 and len(starts) - k * content < content // 4:
            pieces[-1] += text[a:b]
        else:
            pieces.append(text[a:b])
    return [piece for piece in pieces if piece.strip()]


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.text(alphabet="ab é\n.\t", max_size=60), max_size=12),
    seq_len=st.integers(2, 20),
)
def test_pieces_cut_as_read_are_the_pieces_of_the_whole_stream(
    bpe: Any, docs: list[str], seq_len: int
) -> None:
    assert list(iter_chunks(docs, bpe, seq_len, batch=3)) == reference_chunks(docs, bpe, seq_len)


def test_the_rows_are_the_in_memory_examples(bpe: Any, sp: Any) -> None:
    """Text chunks, then prompt/completion records (prompt unscored): every column equals
    what tokenising and aligning the whole list at once makes."""
    pairs = [{"prompt": f"Question {k}: ", "completion": CORPUS[k][:80]} for k in range(5)]
    records = [{"text": t} for t in CORPUS[:10]] + pairs
    rows = list(example_rows(records, _reader(bpe, 32), [_reader(sp, 128, bpe)],
                             align="mined", seq_len=32, loss_on=None))  # fmt: skip
    chunks = chunk_texts(CORPUS[:10], bpe, 32) + [p["prompt"] + p["completion"] for p in pairs]
    prompt = [0] * (len(chunks) - len(pairs)) + [len(p["prompt"]) for p in pairs]
    target = encode_chunks(bpe, chunks, 32)
    source = prepare_source(sp, bpe, chunks, target, align="mined", max_len=128, progress=False)
    assert len(rows) == len(chunks)
    for k, row in enumerate(rows):
        assert row["input_ids"] == target[k].ids.tolist()
        assert row["n_bytes"] == target[k].n_bytes
        scored = scored_positions(target[k], chunks[k], prompt[k])
        assert row["scored"] == (None if scored is None else scored.tolist())
        assert row["s0_ids"] == source.encodings[k].ids.tolist()
        assert row["s0_align"] == source.align[k].tolist()
        assert row["s0_n_bytes"] == source.encodings[k].n_bytes and not row["talk"]
    assert sum(r["scored"] is not None for r in rows) == len(pairs)


def test_a_record_with_text_is_text_whatever_else_it_holds(bpe: Any, sp: Any) -> None:
    texts = [{"text": t} for t in CORPUS[:3]]
    mixed = [{**texts[0], "prompt": "q: ", "completion": "a"}, {**texts[1], "completion": "x"},
             texts[2]]  # fmt: skip
    args = (_reader(bpe, 32), [_reader(sp, 128, bpe)])
    made = list(example_rows(mixed, *args, align="offsets", seq_len=32, loss_on=None))
    assert made == list(example_rows(texts, *args, align="offsets", seq_len=32, loss_on=None))


def test_the_rows_do_not_depend_on_the_batch(
    model_dirs: dict, bpe: Any, sp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text, prompt/completion and conversations (each model in its own template) make the
    same rows a few at a time as all at once."""
    import fusekit.strategies.fusellm.examples as examples

    talks = [TALK, {"messages": [{"role": "user", "content": "2 + 2?"},
                                 {"role": "assistant", "content": "4"}]}]  # fmt: skip
    records = [{"text": t} for t in CORPUS[:6]] + [{"prompt": "q: ", "completion": "a b"}] + talks
    target, sources = _reader(bpe, 256, template=CHATML), [_reader(sp, 1024, bpe, template=GEMMA)]

    def rows() -> list[dict[str, Any]]:
        return list(example_rows(records, target, sources, align="offsets", seq_len=256,
                                 loss_on=None))  # fmt: skip

    whole = rows()
    monkeypatch.setattr(examples, "BATCH", 3)
    assert rows() == whole
    assert [r["talk"] for r in whole][-2:] == [True, True] and not whole[0]["talk"]
    found = summary(in_memory_rows(whole), 1)
    assert found.conversations == 2 and "aligned_content_positions" in found.shares[0]


def in_memory_rows(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa
    from datasets import Dataset

    return Dataset(pa.Table.from_pylist(rows, schema=schema(1)))


def test_the_summary_counts_what_the_list_shares_count(bpe: Any, sp: Any) -> None:
    chunks = chunk_texts(CORPUS[:8], bpe, 24)
    target = encode_chunks(bpe, chunks, 24)
    source = prepare_source(sp, bpe, chunks, target, align="mined", max_len=96, progress=False)
    found = summary(in_memory(target, [(source.encodings, source.align)]), 1)
    assert (found.chunks, found.conversations) == (len(chunks), 0)
    assert found.shares[0]["aligned_positions"] == pytest.approx(aligned_share(source.align))
    assert 0.0 < found.shares[0]["aligned_positions"] < 1.0
    assert "aligned_content_positions" not in found.shares[0]


def test_a_cache_entry_keeps_its_summary(
    bpe: Any, sp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting walks every row: a cache entry, which never changes, is counted once."""
    import fusekit.strategies.fusellm.examples as examples
    from fusekit.data.tokenized import cached_rows

    records = [{"text": t} for t in CORPUS[:6]]
    rows = cached_rows(
        {"test": "summary"},
        lambda: example_rows(records, _reader(bpe, 32), [_reader(sp, 128, bpe)],
                             align="offsets", seq_len=32, loss_on=None),
        schema(1),
        seq_len=32,
    )  # fmt: skip
    first = summary(rows, 1)
    assert first.chunks == len(rows) > 0
    monkeypatch.setattr(examples, "_count", lambda *_: pytest.fail("counted again"))
    assert summary(rows, 1) == first


def test_a_column_reads_arrays_and_slices_from_the_file(bpe: Any, sp: Any) -> None:
    chunks = chunk_texts(CORPUS[:4], bpe, 24)
    target = encode_chunks(bpe, chunks, 24)
    source = encode_chunks(sp, chunks, 96)
    rows = in_memory(target, [(source, [np.full(len(t), -1) for t in target])])
    ids = Column(rows, "s0_ids")
    assert len(ids) == len(chunks)
    assert [a.tolist() for a in ids] == [e.ids.tolist() for e in source]
    assert [a.tolist() for a in ids[1:3]] == [e.ids.tolist() for e in source[1:3]]
    assert Column(rows, "s0_counted", dtype=bool)[0] is None
    assert rows.features.arrow_schema == schema(1)


def test_pieces_are_cut_as_the_documents_are_read(bpe: Any) -> None:
    """A corpus is never held whole: the first pieces come out of an endless stream."""

    def endless() -> Any:
        for k in itertools.count():
            assert k < 1000, "the documents were read ahead of the pieces"
            yield CORPUS[k % len(CORPUS)]

    first = list(itertools.islice(iter_chunks(endless(), bpe, 32), 20))
    assert len(first) == 20
    assert first == chunk_texts(CORPUS * 40, bpe, 32)[:20]


def _recipe(models: dict, data: Path, loss_on: str | None = None, **fields: Any) -> FuseLLMRecipe:
    train = {"data": str(data), "steps": 2, "lr": 1e-3, "batch_size": 4, "seq_len": 32,
             "loss_on": loss_on}  # fmt: skip
    return FuseLLMRecipe(strategy="fusellm", target=str(models["target"]),
                         sources=[str(models["sp"])], train=train, **fields)  # fmt: skip


def test_a_second_run_reads_the_examples_from_the_cache(
    model_dirs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep over what does not shape the examples (``lam``) tokenises and aligns once;
    another alignment, or another ``loss_on``, makes other examples."""
    import fusekit.data.tokenized as tokenized

    said: list[str] = []
    monkeypatch.setattr(tokenized.log, "info", said.append)
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS[:8]))
    first = run(_recipe(model_dirs, data), output=tmp_path / "one")
    second = run(_recipe(model_dirs, data, lam=0.5), output=tmp_path / "two")
    made = [s for s in said if "fusellm:" in s]
    assert made[0] == "fusekit: fusellm: tokenising" and len(made) == 2
    assert made[1].startswith("fusekit: fusellm: tokenised examples read from the cache")
    one, two = (json.loads((tmp_path / o / "fusekit.json").read_text()) for o in ("one", "two"))
    assert one["details"]["chunks"] == two["details"]["chunks"] > 0
    assert one["details"]["sources"] == two["details"]["sources"]
    assert first.training is not None and second.training is not None
    run(_recipe(model_dirs, data, align="em"), output=tmp_path / "three")
    assert sum(s == "fusekit: fusellm: tokenising" for s in said) == 2, said
    run(_recipe(model_dirs, data, loss_on="all"), output=tmp_path / "four")
    assert sum(s == "fusekit: fusellm: tokenising" for s in said) == 3, said

"""train.streaming: the cache's examples, read while training, shuffled in a buffer, endless."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

import fusekit.data.causal_lm as causal_lm
from fusekit.data import streamed
from fusekit.data.causal_lm import PadCollator
from fusekit.data.streamed import StreamedExamples
from fusekit.data.tokenized import BATCH, tokenized_examples
from fusekit.errors import DataError
from tests.data.test_tokenized import _corpus
from tests.training.test_chat import CHATML, TALK


def _rows(examples) -> list[tuple[list[int], list[int]]]:
    """Each example as (ids, labels) the collator makes: a block's labels are its ids."""
    collate = PadCollator(0)
    return [(list(x["input_ids"]), collate([dict(x)])["labels"][0].tolist()) for x in examples]


def _pass(dataset: StreamedExamples, number: int = 0, shuffle: bool = True) -> list:
    return _rows(dataset.one_pass(number, shuffle=shuffle))


@pytest.mark.parametrize("seq_len", [16, 64])
def test_a_pass_holds_the_caches_examples(tokenizer, tmp_path: Path, seq_len: int) -> None:
    data = str(_corpus(tmp_path / "corpus.jsonl"))
    cached = _rows(tokenized_examples(data, tokenizer, seq_len))
    stream = StreamedExamples(data, tokenizer, seq_len)
    in_order = _pass(stream, shuffle=False)
    assert sorted(in_order) == sorted(cached)
    # blocks keep the text stream's order and the other examples their records' order
    blocks = [r for r in cached if r[0] == r[1]]
    assert [r for r in in_order if r[0] == r[1]] == blocks and len(blocks) > 3
    assert [r for r in in_order if r[0] != r[1]] == [r for r in cached if r[0] != r[1]]


def test_conversations_and_loss_on_as_the_cache(tokenizer, tmp_path: Path) -> None:
    data = tmp_path / "talk.jsonl"
    pair = {"prompt": TALK["messages"][:4], "completion": TALK["messages"][4:]}
    data.write_text("".join(json.dumps(r) + "\n" for r in [TALK, pair, {"text": "def x"}]))
    for loss_on in (None, "all", "completion"):
        cached = tokenized_examples(str(data), tokenizer, 256, loss_on=loss_on,
                                    chat_template=CHATML)  # fmt: skip
        stream = StreamedExamples(str(data), tokenizer, 256, loss_on=loss_on,
                                  chat_template=CHATML)  # fmt: skip
        assert sorted(_pass(stream)) == sorted(_rows(cached))


def test_the_shuffle_is_seeded_per_pass_and_the_stream_never_ends(
    tokenizer, tmp_path: Path, cache: Path
) -> None:
    data = str(_corpus(tmp_path / "corpus.jsonl"))
    stream = StreamedExamples(data, tokenizer, 16, seed=3, buffer=20)
    ordered = _pass(stream, shuffle=False)
    first, second = _pass(stream, 0), _pass(stream, 1)
    assert sorted(first) == sorted(second) == sorted(ordered)
    assert first != ordered and first != second
    assert _pass(StreamedExamples(data, tokenizer, 16, seed=3, buffer=20), 0) == first
    assert _pass(StreamedExamples(data, tokenizer, 16, seed=4, buffer=20), 0) != first
    endless = _rows(itertools.islice(iter(stream), 2 * len(first) + 5))
    assert endless[: len(first)] == first
    assert endless[len(first) : 2 * len(first)] == second
    assert not cache.exists()  # nothing is written


def test_records_are_read_as_training_asks_for_them(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory holds a batch of records and the buffer, not the corpus: the first example
    comes after one batch of records has been read, whatever the corpus's size."""
    data = str(_corpus(tmp_path / "corpus.jsonl", n=3 * BATCH))
    read = 0
    records = causal_lm.stream_records

    def counted(ref):
        nonlocal read
        for record in records(ref):
            read += 1
            yield record

    monkeypatch.setattr(streamed, "stream_records", counted)
    stream = StreamedExamples(data, tokenizer, 16, buffer=8)
    next(iter(stream))
    assert read == BATCH


def test_data_that_makes_no_example_is_refused_before_training(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    choices = tmp_path / "choices.jsonl"
    choices.write_text(json.dumps({"prompt": "a", "choices": ["b", "c"], "answer": 0}) + "\n")
    with pytest.raises(DataError, match="produced no examples"):
        StreamedExamples(str(choices), tokenizer, 32).first()
    cut = tmp_path / "cut.jsonl"
    cut.write_text(json.dumps({"prompt": "class " * 300, "completion": " yield"}) + "\n")
    with pytest.raises(DataError, match=r"every answer past train\.seq_len=32"):
        StreamedExamples(str(cut), tokenizer, 32).first()
    with pytest.raises(DataError, match="produced no examples"):
        next(iter(StreamedExamples(str(cut), tokenizer, 32)))
    # some left out, some kept: said once, for the first pass
    cut.write_text(cut.read_text() + json.dumps({"prompt": "a", "completion": " b"}) + "\n")
    said: list[str] = []
    monkeypatch.setattr(streamed.log, "warning", said.append)
    stream = StreamedExamples(str(cut), tokenizer, 32)
    assert len(list(itertools.islice(iter(stream), 3))) == 3
    assert len(said) == 1 and "1 of 2 examples have no trained token" in said[0]


def test_conversations_without_a_template_are_one_line(tokenizer, tmp_path: Path) -> None:
    data = tmp_path / "talk.jsonl"
    data.write_text(json.dumps({"text": "def x"}) + "\n" + json.dumps(TALK) + "\n")
    with pytest.raises(DataError, match=r"no chat template; set train\.chat_template"):
        StreamedExamples(str(data), tokenizer, 64, model="m").first()

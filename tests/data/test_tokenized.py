"""Tokenised once, cached as Arrow: the same examples as the in-memory dataset, reused."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from fusekit.data import tokenized
from fusekit.data.causal_lm import CausalLMDataset, PadCollator, load_records
from fusekit.data.tokenized import cache_key, tokenized_examples
from fusekit.errors import DataError
from tests.training.test_chat import CHATML, TALK


def _corpus(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = [
        "def",
        "return",
        "class",
        "import",
        "lambda",
        "yield",
        "while",
        "for",
        "in",
        "if",
        "else",
        "try",
    ]
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 40)))
        if i % 5 == 4:
            rows.append({"prompt": text, "completion": " " + rng.choice(words)})
        else:
            rows.append({"text": text})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _same(arrow, memory) -> None:
    assert len(arrow) == len(memory)
    collate = PadCollator(0)
    for i in range(len(memory)):
        a, m = arrow[i], memory[i]
        assert a["input_ids"] == m["input_ids"], i
        assert collate([a])["labels"].tolist() == collate([m])["labels"].tolist(), i


@pytest.mark.parametrize("seq_len", [16, 64])
def test_the_examples_equal_the_in_memory_datasets(tokenizer, tmp_path: Path, seq_len) -> None:
    data = _corpus(tmp_path / "corpus.jsonl")
    arrow = tokenized_examples(str(data), tokenizer, seq_len)
    _same(arrow, CausalLMDataset(load_records(str(data)), tokenizer, seq_len))


def test_conversations_and_loss_on_match_too(tokenizer, tmp_path: Path) -> None:
    data = tmp_path / "talk.jsonl"
    pair = {"prompt": TALK["messages"][:4], "completion": TALK["messages"][4:]}
    data.write_text("".join(json.dumps(r) + "\n" for r in [TALK, pair, TALK]))
    for loss_on in (None, "all", "completion"):
        arrow = tokenized_examples(str(data), tokenizer, 256, loss_on=loss_on,
                                   chat_template=CHATML)  # fmt: skip
        memory = CausalLMDataset(load_records(str(data)), tokenizer, 256, loss_on=loss_on,
                                 chat_template=CHATML)  # fmt: skip
        _same(arrow, memory)


def test_a_second_run_reads_the_cache(tokenizer, tmp_path: Path, cache: Path, caplog) -> None:
    data = _corpus(tmp_path / "corpus.jsonl")
    first = tokenized_examples(str(data), tokenizer, 32)
    [folder] = (cache / "data").iterdir()
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fusekit"):
        again = tokenized_examples(str(data), tokenizer, 32)
    assert "read from the cache" in caplog.text and "tokenising" not in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    _same(again, first)
    # the key follows the content, the settings and the template, not the file's name
    moved = tmp_path / "renamed.jsonl"
    moved.write_bytes(data.read_bytes())
    assert cache_key(str(moved), tokenizer, 32, None, None) == folder.name
    for other in (cache_key(str(data), tokenizer, 64, None, None),
                  cache_key(str(data), tokenizer, 32, "all", None),
                  cache_key(str(data), tokenizer, 32, None, CHATML)):  # fmt: skip
        assert other != folder.name
    data.write_text(data.read_text() + json.dumps({"text": "one more"}) + "\n")
    assert cache_key(str(data), tokenizer, 32, None, None) != folder.name
    assert not list((cache / "data").glob(".*")), "a scratch folder was left behind"


def test_several_processes_give_the_same_examples(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _corpus(tmp_path / "corpus.jsonl", n=400)
    one = [dict(x) for x in tokenized_examples(str(data), tokenizer, 32)]
    monkeypatch.setattr(tokenized, "PARALLEL_RECORDS", 100)
    monkeypatch.setattr(tokenized, "LAYOUT", tokenized.LAYOUT + 1000)  # a fresh cache entry
    two = [dict(x) for x in tokenized_examples(str(data), tokenizer, 32)]
    assert one == two
    # train.num_proc chooses the processes whatever the corpus's size
    monkeypatch.setattr(tokenized, "PARALLEL_RECORDS", 10**9)
    monkeypatch.setattr(tokenized, "LAYOUT", tokenized.LAYOUT + 1000)
    said: list[str] = []
    monkeypatch.setattr(tokenized.log, "info", said.append)
    three = [dict(x) for x in tokenized_examples(str(data), tokenizer, 32, num_proc=3)]
    assert any("tokenising 400 records in 3 processes" in line for line in said), said
    assert three == one


def test_data_with_nothing_to_train_on_is_one_line(tokenizer, tmp_path: Path) -> None:
    data = tmp_path / "choices.jsonl"  # multiple-choice records evaluate, they do not train
    data.write_text(json.dumps({"prompt": "a", "choices": ["b", "c"], "answer": 0}) + "\n")
    with pytest.raises(DataError, match="produced no examples"):
        tokenized_examples(str(data), tokenizer, 32)


def test_examples_whose_answer_lies_past_seq_len_are_left_out_and_said(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation or completion cut off before its first trained token would be a row
    without a label (a batch of them, a 0/0 loss and a run stopped for NaN): both readers
    leave the same ones out and say so; when nothing is left the data is one line."""
    import fusekit.data.causal_lm as causal_lm

    long = {"messages": [{"role": "user", "content": "def " * 300},
                         {"role": "assistant", "content": "return"}]}  # fmt: skip
    cut = {"prompt": "class " * 300, "completion": " yield"}
    data = tmp_path / "talk.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [TALK, long, cut, TALK]))
    said: list[str] = []
    monkeypatch.setattr(causal_lm.log, "warning", said.append)
    arrow = tokenized_examples(str(data), tokenizer, 128, chat_template=CHATML)
    memory = CausalLMDataset(load_records(str(data)), tokenizer, 128, chat_template=CHATML)
    _same(arrow, memory)
    assert len(arrow) == 2
    assert len(said) == 2 and all("2 of 4 examples have no trained token" in s for s in said)
    _same(tokenized_examples(str(data), tokenizer, 128, chat_template=CHATML), memory)
    assert len(said) == 3 and "2 of 4 examples" in said[2], "a run that reads the cache says it too"
    data.write_text("".join(json.dumps(r) + "\n" for r in [long, cut]))
    for make in (tokenized_examples, lambda d, *a, **k: CausalLMDataset(load_records(d), *a, **k)):
        with pytest.raises(
            DataError, match=r"no example has a trained token.*raise train\.seq_len"
        ):
            make(str(data), tokenizer, 128, chat_template=CHATML)

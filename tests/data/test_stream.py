"""The validation pass reads a JSON Lines corpus a record at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusekit.data.causal_lm import load_records, stream_records
from fusekit.errors import DataError


def test_records_stream_so_a_corpus_is_never_held_whole(tmp_path: Path) -> None:
    data = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": f"document {i}"}) for i in range(1000)] + ["not json"]
    data.write_text("\n".join(lines) + "\n")
    records = stream_records(str(data))
    assert next(records) == {"text": "document 0"}  # read before the bad line is reached
    with pytest.raises(DataError, match=r"corpus.jsonl:1001: not valid JSON"):
        list(records)
    with pytest.raises(DataError, match=r"corpus.jsonl:1001: not valid JSON"):
        load_records(str(data))


def test_streamed_records_are_checked_like_loaded_ones(tmp_path: Path) -> None:
    data = tmp_path / "talk.jsonl"
    data.write_text(json.dumps({"text": " "}) + "\n")
    for read in (lambda: list(stream_records(str(data))), lambda: load_records(str(data))):
        with pytest.raises(DataError, match="holds no text"):
            read()
    data.write_text(json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"talk.jsonl:1: messages\[0\]: unknown role 'bot'"):
        list(stream_records(str(data)))


def test_training_and_evaluation_read_a_file_as_the_same_records(tmp_path: Path) -> None:
    """One reader: a ``.txt`` is documents separated by blank lines for both, and a bad
    line is named the same way (``file:line``) whichever path reads it."""
    from fusekit.data.records import iter_records

    data = tmp_path / "book.txt"
    data.write_text("first line\nstill first\n\n  \nsecond\n\nthird\n")
    expected = [{"text": "first line\nstill first"}, {"text": "second"}, {"text": "third"}]
    assert load_records(str(data)) == expected
    assert [dict(r) for _, r in iter_records(data)] == expected
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    for read in (lambda: load_records(str(bad)), lambda: list(iter_records(bad))):
        with pytest.raises(DataError, match=r"bad.jsonl:2: byte 13 is not UTF-8"):
            read()

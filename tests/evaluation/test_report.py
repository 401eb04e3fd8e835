"""Tables of results for the terminal, markdown files and comparisons."""

from __future__ import annotations

import pytest

from fusekit.evaluation.report import format_value, markdown_table, table_rows, terminal_table

RESULTS = [
    {
        "metric": "bpb",
        "value": 1.234567,
        "model_name": "base",
        "data": "/d/heldout.jsonl",
        "counts": {"examples": 10, "tokens": 1234, "bytes": 5000},
    },
    {
        "metric": "bpb",
        "value": 1.1,
        "model_name": "deeper",
        "data": "/d/heldout.jsonl",
        "counts": {"examples": 10, "tokens": 1234, "bytes": 5000},
    },
    {
        "metric": "exact_match",
        "value": 0.843,
        "model_name": "deeper",
        "data": "/d/kv.jsonl",
        "counts": {"examples": 200, "correct": 169},
    },
]


def test_values_are_formatted_per_metric() -> None:
    assert format_value("bpb", 1.234567) == "1.2346"
    assert format_value("perplexity", 12.34567) == "12.346"
    assert format_value("exact_match", 0.843) == "84.3%"
    assert format_value("multiple_choice", 1.0) == "100.0%"
    assert format_value("bpb", None) == "–"


def test_long_markdown_table() -> None:
    lines = markdown_table(RESULTS).splitlines()
    assert lines[0] == "| model | data | metric | value | examples | tokens | bytes |"
    assert lines[1] == "|---|---|---|---:|---:|---:|---:|"
    assert lines[2] == "| base | heldout.jsonl | bpb | 1.2346 | 10 | 1,234 | 5,000 |"
    assert lines[4] == "| deeper | kv.jsonl | exact_match | 84.3% | 200 | – | – |"
    assert len(lines) == 2 + len(RESULTS)


def test_wide_layout_puts_each_model_on_one_row() -> None:
    header, rows = table_rows(RESULTS, layout="wide")
    assert header == ["model", "bpb (heldout.jsonl)", "exact_match (kv.jsonl)"]
    assert rows == [["base", "1.2346", "–"], ["deeper", "1.1000", "84.3%"]]


def test_terminal_table_aligns_columns() -> None:
    lines = terminal_table(RESULTS, layout="wide").splitlines()
    assert lines[0].split() == ["model", "bpb", "(heldout.jsonl)", "exact_match", "(kv.jsonl)"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len({len(line) for line in lines[:2]}) == 1  # the rule spans the header
    assert lines[3].startswith("deeper") and lines[3].endswith("84.3%")
    assert lines[2].index("1.2346") == lines[3].index("1.1000")  # numbers right-aligned


def test_unknown_layout() -> None:
    with pytest.raises(ValueError, match="layout"):
        table_rows(RESULTS, layout="diagonal")


def test_pipes_in_names_are_escaped() -> None:
    table = markdown_table([{"metric": "bpb", "value": 1.0, "model_name": "a|b", "data": None}])
    assert "a\\|b" in table

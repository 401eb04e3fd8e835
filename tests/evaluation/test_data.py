"""Reading evaluation data: formats, locations in error messages, laziness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusekit.errors import DataError
from fusekit.evaluation.data import as_choice, as_pair, as_text_item, iter_records


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_records_with_locations(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"prompt": "p", "completion": "c"}\n', encoding="utf-8")
    assert list(iter_records(path)) == [
        (f"{path}:1", {"text": "a"}),
        (f"{path}:3", {"prompt": "p", "completion": "c"}),
    ]


def test_txt_documents_are_separated_by_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("first line\nsecond line\n\n  \nnext doc\n\n\nlast", encoding="utf-8")
    texts = [record["text"] for _, record in iter_records(path)]
    assert texts == ["first line\nsecond line", "next doc", "last"]


def test_json_list_and_in_memory_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "x"}]), encoding="utf-8")
    assert [r for _, r in iter_records(path)] == [{"text": "x"}]
    assert list(iter_records(["a", {"text": "b"}])) == [
        ("data[0]", {"text": "a"}),
        ("data[1]", {"text": "b"}),
    ]


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    records = iter_records(path)
    assert next(records) == (f"{path}:1", {"text": "ok"})
    with pytest.raises(DataError, match=rf"{path.name}:2: not valid JSON"):
        next(records)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.jsonl", "[1, 2]\n", "expected a JSON object"),
        ("d.csv", "a,b\n", "unknown data format '.csv'"),
        ("d.json", '{"text": "a"}', "expected a JSON list"),
        ("d.txt", b"\xff\xfe bad", "not UTF-8"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, name: str, content: object, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content), encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        list(iter_records(path))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        iter_records(tmp_path / "absent.jsonl")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # keeps the module importable either way
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path = tmp_path / "d.parquet"
        path.write_bytes(b"PAR1")
        with pytest.raises(DataError, match="pip install pyarrow"):
            list(iter_records(path))
    else:
        pytest.skip("pyarrow is installed")


def test_datasets_folder_without_datasets_says_what_to_install(tmp_path: Path) -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pip install datasets"):
            list(iter_records(tmp_path))
    else:
        pytest.skip("datasets is installed")


def test_record_conversions_check_fields() -> None:
    assert as_text_item("w", {"text": "t"}) == "t"
    assert as_text_item("w", {"prompt": "p", "completion": "c"}) == ("p", "c")
    assert as_pair("w", {"prompt": "p", "completion": "c"}) == ("p", "c")
    assert as_choice("w", {"prompt": "p", "choices": ["a", "b"], "answer": 1}) == (
        "p",
        ["a", "b"],
        1,
    )
    with pytest.raises(DataError, match="w: needs a 'text' field"):
        as_text_item("w", {"body": "t"})
    with pytest.raises(DataError, match="field 'text' must be a str, found a int"):
        as_text_item("w", {"text": 3})
    with pytest.raises(DataError, match="exact match needs"):
        as_pair("w", {"text": "t"})
    with pytest.raises(DataError, match="not an index into 2 choices"):
        as_choice("w", {"prompt": "p", "choices": ["a", "b"], "answer": 2})
    with pytest.raises(DataError, match="must be a int, found a bool"):
        as_choice("w", {"prompt": "p", "choices": ["a", "b"], "answer": True})
    with pytest.raises(DataError, match="non-empty list of strings"):
        as_choice("w", {"prompt": "p", "choices": [], "answer": 0})

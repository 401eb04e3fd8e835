"""Reading evaluation data: formats, locations in error messages, laziness.

``.parquet`` files and ``save_to_disk`` folders are written for real with
pyarrow and ``datasets`` (both come with the ``dev`` extra, through lm-eval);
a missing library is simulated by a ``None`` entry in ``sys.modules``, so the
install hint is checked on every run.  The training reader
(``fusekit.data.causal_lm``) accepts the same two formats and is checked here too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from fusekit.data.records import as_choice, as_pair, as_text_item, iter_records
from fusekit.errors import DataError


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
        ("d.json", '{"text": "a"}', "holds a list of records"),
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


def write_parquet(path: Path, columns: dict[str, list[Any]]) -> Path:
    """A real parquet file, written by pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def save_dataset(
    path: Path, splits: dict[str, dict[str, list[Any]]] | dict[str, list[Any]]
) -> Path:
    """A real ``save_to_disk`` folder: a ``Dataset`` from columns, a ``DatasetDict`` from splits."""
    import datasets

    if all(isinstance(v, dict) for v in splits.values()):
        saved: Any = datasets.DatasetDict(
            {name: datasets.Dataset.from_dict(columns) for name, columns in splits.items()}
        )
    else:
        saved = datasets.Dataset.from_dict(splits)
    saved.save_to_disk(str(path))
    return path


def test_parquet_rows_are_records_with_locations(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"text": ["a", "héllo 😀", "d\ne"]})
    assert list(iter_records(path)) == [
        (f"{path}:row 0", {"text": "a"}),
        (f"{path}:row 1", {"text": "héllo 😀"}),
        (f"{path}:row 2", {"text": "d\ne"}),
    ]


def test_parquet_rows_are_counted_across_batches(tmp_path: Path) -> None:
    """pyarrow yields 65,536 rows a batch; the row after the first batch is row 65536."""
    import pyarrow.parquet as pq

    rows = 65_536 + 3
    path = write_parquet(tmp_path / "d.parquet", {"text": [f"t{i}" for i in range(rows)]})
    assert sum(1 for _ in pq.ParquetFile(path).iter_batches()) > 1
    located = list(iter_records(path))
    assert len(located) == rows
    assert located[-1] == (f"{path}:row {rows - 1}", {"text": f"t{rows - 1}"})


def test_parquet_prompt_completion_and_choice_columns(tmp_path: Path) -> None:
    pairs = write_parquet(
        tmp_path / "pairs.parquet", {"prompt": ["p0", "p1", "p2"], "completion": [" a", " b", " c"]}
    )
    assert [as_pair(w, r) for w, r in iter_records(pairs)] == [
        ("p0", " a"),
        ("p1", " b"),
        ("p2", " c"),
    ]
    assert [as_text_item(w, r) for w, r in iter_records(pairs)][1] == ("p1", " b")
    choices = write_parquet(
        tmp_path / "mc.parquet",
        {"prompt": ["q0", "q1"], "choices": [[" x", " y"], [" u", " v", " w"]], "answer": [1, 2]},
    )
    assert [as_choice(w, r) for w, r in iter_records(choices)] == [
        ("q0", [" x", " y"], 1),
        ("q1", [" u", " v", " w"], 2),
    ]


def test_parquet_missing_columns_and_nulls_name_the_row(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"body": ["a"], "text": [None]})
    ((where, record),) = iter_records(path)
    with pytest.raises(
        DataError, match=r"d\.parquet:row 0: field 'text' must be a str, found missing"
    ):
        as_text_item(where, record)
    wrong = write_parquet(tmp_path / "w.parquet", {"body": ["a", "b"]})
    located = list(iter_records(wrong))
    with pytest.raises(DataError, match=r"w\.parquet:row 1: needs a 'text' field"):
        as_text_item(*located[1])
    with pytest.raises(DataError, match=r"w\.parquet:row 0: exact match needs"):
        as_pair(*located[0])


def test_a_file_that_is_not_parquet_says_so(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"d\.parquet: not a readable parquet file"):
        list(iter_records(path))


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_parquet(tmp_path / "d.parquet", {"text": ["a"]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # None in sys.modules: import fails
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(
        DataError, match=r"d\.parquet: reading \.parquet needs pyarrow \(pip install pyarrow\)"
    ):
        list(iter_records(path))


def test_a_saved_dataset_folder_is_read_row_by_row(tmp_path: Path) -> None:
    texts = save_dataset(tmp_path / "texts", {"text": ["a", "héllo 😀"]})
    assert list(iter_records(texts)) == [
        (f"{texts}:row 0", {"text": "a"}),
        (f"{texts}:row 1", {"text": "héllo 😀"}),
    ]
    pairs = save_dataset(tmp_path / "pairs", {"prompt": ["p0", "p1"], "completion": [" a", " b"]})
    assert [as_pair(w, r) for w, r in iter_records(pairs)] == [("p0", " a"), ("p1", " b")]
    mc = save_dataset(tmp_path / "mc", {"prompt": ["q"], "choices": [[" x", " y"]], "answer": [1]})
    assert [as_choice(w, r) for w, r in iter_records(mc)] == [("q", [" x", " y"], 1)]
    wrong = save_dataset(tmp_path / "wrong", {"body": ["a"]})
    with pytest.raises(DataError, match=r"wrong:row 0: needs a 'text' field"):
        as_text_item(*next(iter_records(wrong)))


@pytest.mark.parametrize(
    ("splits", "used"),
    [
        (("train", "validation", "test"), "test"),
        (("train", "validation"), "validation"),
        (("train",), "train"),
    ],
)
def test_a_saved_dataset_dict_uses_test_then_validation_then_its_only_split(
    tmp_path: Path, splits: tuple[str, ...], used: str
) -> None:
    path = save_dataset(tmp_path / "dd", {name: {"text": [f"{name} doc"]} for name in splits})
    assert [r["text"] for _, r in iter_records(path)] == [f"{used} doc"]


def test_bad_dataset_folders_say_what_is_wrong(tmp_path: Path) -> None:
    ambiguous = save_dataset(tmp_path / "dd", {"train": {"text": ["a"]}, "extra": {"text": ["b"]}})
    with pytest.raises(DataError, match=r"holds splits \['train', 'extra'\]; save the one"):
        list(iter_records(ambiguous))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: not a folder written by datasets' save_to_disk"):
        list(iter_records(empty))


def test_datasets_folder_without_datasets_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_dataset(tmp_path / "texts", {"text": ["a"]})
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(
        DataError,
        match=r"texts: reading a saved datasets folder needs the datasets package \(pip install datasets\)",
    ):
        list(iter_records(path))


def test_a_parquet_file_and_a_dataset_folder_score_as_their_records(
    tmp_path: Path, model: Any, tokenizer: Any
) -> None:
    """Through ``evaluate``: the same texts give the same bits per byte from every source."""
    from fusekit.evaluation.harness import evaluate

    texts = ["the quick brown fox.", "héllo wörld 😀", "12 + 30 = 42"]
    expected = evaluate(model, texts, tokenizer=tokenizer, progress=False)
    for data in (
        write_parquet(tmp_path / "d.parquet", {"text": texts}),
        save_dataset(tmp_path / "saved", {"text": texts}),
    ):
        result = evaluate(model, data, tokenizer=tokenizer, progress=False)
        assert result["value"] == expected["value"] and result["counts"] == expected["counts"]


def test_training_reads_parquet_and_dataset_folders(tmp_path: Path) -> None:
    """``fusekit.data.causal_lm.load_records`` reads the same two formats, to plain dicts."""
    from fusekit.data.causal_lm import load_records

    columns = {"prompt": ["p0", "p1", "p2"], "completion": [" a", " b", " c"]}
    rows = [{"prompt": p, "completion": c} for p, c in zip(*columns.values(), strict=True)]
    assert load_records(write_parquet(tmp_path / "d.parquet", columns)) == rows
    assert load_records(save_dataset(tmp_path / "saved", columns)) == rows
    with pytest.raises(DataError, match=r"w.parquet:row 0: the record has neither a 'text' string"):
        load_records(write_parquet(tmp_path / "w.parquet", {"body": ["a"]}))
    with pytest.raises(DataError, match=r"w:row 1: the record has neither a 'text' string"):
        load_records(save_dataset(tmp_path / "w", {"text": ["a", None]}))


def test_training_without_pyarrow_or_datasets_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fusekit.data.causal_lm import load_records

    parquet = write_parquet(tmp_path / "d.parquet", {"text": ["a"]})
    saved = save_dataset(tmp_path / "saved", {"text": ["a"]})
    for name in ("pyarrow", "pyarrow.parquet", "datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(DataError, match=r"pip install pyarrow"):
        load_records(parquet)
    with pytest.raises(DataError, match=r"pip install datasets"):
        load_records(saved)


def test_training_reads_a_dataset_dict_and_refuses_a_bad_parquet(tmp_path: Path) -> None:
    """Training shares evaluation's reader: a ``DatasetDict`` folder (what
    ``load_dataset(...).save_to_disk`` writes) reads its split; a corrupt parquet file
    is a ``DataError`` naming the file, never pyarrow's own exception."""
    from fusekit.data.causal_lm import load_records

    saved = save_dataset(tmp_path / "dd", {"train": {"text": ["a", "b"]}})
    assert load_records(saved) == [{"text": "a"}, {"text": "b"}]
    bad = tmp_path / "d.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"d\.parquet: not a readable parquet file"):
        load_records(bad)
    with pytest.raises(DataError, match=r"not a folder written by datasets' save_to_disk"):
        load_records(tmp_path)


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

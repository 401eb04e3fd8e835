"""Data files and in-memory records, read lazily, with errors that name the spot.

The one reader of training and evaluation data (``fusekit.data.causal_lm`` checks the
records it yields), so a file means the same records to both.

Accepted ``data``:

* ``.jsonl`` — one JSON object per line (blank lines skipped): ``{"text"}``,
  ``{"messages"}``, ``{"prompt", "completion"}`` or
  ``{"prompt", "choices", "answer"}``;
* ``.json`` — a JSON list of such objects;
* ``.txt`` — documents separated by blank lines (a line holding only
  whitespace), as ``datasets``' text loader reads them with
  ``sample_by="paragraph"``.  Each document is scored from its own BOS and
  trained followed by EOS, its lines keep their newlines, the final newline is
  dropped, and the blank separators are not text of any document (they add no
  bytes).  A file without blank lines is one document; long documents are
  windowed, never truncated.  Splitting on blank lines lets a corpus of any size
  stream paragraph by paragraph (a text whose blank lines are its own, such as
  source code, goes in ``.jsonl``, one ``{"text"}`` per document);
* ``.parquet`` — rows as records (needs ``pyarrow``);
* a folder written by ``datasets``' ``save_to_disk`` (needs ``datasets``); for
  a ``DatasetDict`` the ``test`` split is used, else ``validation``, else the
  only split;
* a list of records, or of strings (each one a ``{"text"}`` document).

Every record travels with its location (``file.jsonl:12`` or ``data[3]``), so
a bad record's error says exactly where it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fusekit.errors import DataError

Located = tuple[str, Mapping[str, Any]]
_SPLIT_PREFERENCE = ("test", "validation")


def data_label(data: Any) -> str:
    """How results and errors name the data: its path, a recipe's data reference's label
    (``a.jsonl+task:kv``), or ``<N records>``."""
    if isinstance(data, (str, Path)):
        return str(data)
    parts = data if isinstance(data, list) else [data]
    if parts and all(callable(getattr(p, "label", None)) for p in parts):
        return "+".join(p.label() for p in parts)
    try:
        return f"<{len(data)} records>"
    except TypeError:
        return "<records>"


#: UTF-16 halves: JSON may write them as ``\ud800`` escapes, Python keeps them in ``str``,
#: but no UTF-8 text (and so no tokenizer) can hold one alone.
_SURROGATE = re.compile("[\ud800-\udfff]")


def refuse_surrogates(where: str, name: str, value: str) -> str:
    """``value``, or one line naming the record and field if it holds a lone surrogate.

    The tokenizers' Rust core takes only valid UTF-8 and would fail on it with its
    own traceback, half-way through tokenising the corpus.
    """
    found = _SURROGATE.search(value)
    if found is not None:
        raise DataError(
            f"{where}: field {name!r} holds a lone surrogate ({found.group().encode('unicode_escape').decode()} "
            f"at character {found.start()}), which is not text; JSON escapes \\ud800–\\udfff "
            "come in pairs — fix or drop the record"
        )
    return value


def readable_data_path(path: Path) -> Path:
    """``path`` if it exists and is a regular file or a folder, else one line saying why.

    Opening a FIFO waits for a writer that never comes, and a device such as
    ``/dev/zero`` (or a link to it) reads without end: neither is a data file.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not (path.is_file() or path.is_dir()):
        raise DataError(
            f"{path}: not a regular file (a FIFO, socket or device); give a data file or folder"
        )
    return path


def _open_text(path: Path, binary: bool = False) -> Any:
    try:
        return open(path, "rb") if binary else open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


def _iter_jsonl(path: Path) -> Iterator[Located]:
    with _open_text(path, binary=True) as fh:  # decoded line by line: errors name the line
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.start + 1]
                raise DataError(
                    f"{where}: byte {exc.start} is not UTF-8 ({bad!r}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _iter_json(path: Path) -> Iterator[Located]:
    with _open_text(path) as fh:
        try:
            records = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list):
        raise DataError(
            f"{path}: a .json data file holds a list of records; use .jsonl for one per line"
        )
    yield from _iter_memory(records, label=str(path))


def _iter_txt(path: Path) -> Iterator[Located]:
    with _open_text(path) as fh:
        lines: list[str] = []
        start = 1
        try:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    if not lines:
                        start = number
                    lines.append(line)
                elif lines:
                    yield f"{path}:{start}", {"text": "".join(lines).removesuffix("\n")}
                    lines = []
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
        if lines:
            yield f"{path}:{start}", {"text": "".join(lines).removesuffix("\n")}


def _iter_parquet(path: Path) -> Iterator[Located]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    row = 0
    for batch in table.iter_batches():
        for record in batch.to_pylist():
            yield f"{path}:row {row}", record
            row += 1


def _iter_datasets_folder(path: Path) -> Iterator[Located]:
    try:
        import datasets
    except ImportError as exc:
        raise DataError(
            f"{path}: reading a saved datasets folder needs the datasets package "
            "(pip install datasets)"
        ) from exc
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"{path}: not a folder written by datasets' save_to_disk ({exc})") from exc
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        split = next((s for s in _SPLIT_PREFERENCE if s in loaded), None)
        if split is None and len(names) == 1:
            split = names[0]
        if split is None:
            raise DataError(f"{path}: holds splits {names}; save the one to evaluate on its own")
        loaded = loaded[split]
    for row, record in enumerate(loaded):
        yield f"{path}:row {row}", record


def _iter_memory(records: Iterable[Any], label: str = "data") -> Iterator[Located]:
    for index, record in enumerate(records):
        where = f"{label}[{index}]"
        if isinstance(record, str):
            yield where, {"text": record}
        elif isinstance(record, Mapping):
            yield where, record
        else:
            kind = type(record).__name__
            raise DataError(f"{where}: expected a record (dict) or a string, got {kind}")


_READERS = {
    ".jsonl": _iter_jsonl,
    ".json": _iter_json,
    ".txt": _iter_txt,
    ".parquet": _iter_parquet,
}


def iter_records(data: Any) -> Iterator[Located]:
    """``(location, record)`` for every record of ``data`` (see the module docstring), lazily."""
    if isinstance(data, (str, Path)):
        path = readable_data_path(Path(data))
        if path.is_dir():
            return _iter_datasets_folder(path)
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(
                f"{path}: unknown data format {path.suffix!r}; use .jsonl, .json, .txt, .parquet "
                "or a datasets folder"
            )
        return reader(path)
    if isinstance(data, Mapping):
        raise DataError("data: expected a path or a list of records, got a single dict")
    return _iter_memory(data)


def _field(where: str, record: Mapping[str, Any], name: str, kind: type) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        shown = "missing" if value is None else f"a {type(value).__name__}"
        raise DataError(f"{where}: field {name!r} must be a {kind.__name__}, found {shown}")
    if isinstance(value, str):
        refuse_surrogates(where, name, value)
    return value


def as_text_item(where: str, record: Mapping[str, Any]) -> str | tuple[str, str]:
    """A ``{"text"}`` record's text, or a prompt/completion record's ``(prompt, completion)``."""
    if "text" in record:
        return _field(where, record, "text", str)
    if "prompt" in record and "completion" in record:
        return _field(where, record, "prompt", str), _field(where, record, "completion", str)
    raise DataError(f"{where}: needs a 'text' field, or 'prompt' and 'completion' fields")


def as_pair(where: str, record: Mapping[str, Any]) -> tuple[str, str]:
    """``(prompt, completion)`` of a record for exact match."""
    if "prompt" not in record or "completion" not in record:
        raise DataError(f"{where}: exact match needs 'prompt' and 'completion' fields")
    return _field(where, record, "prompt", str), _field(where, record, "completion", str)


def as_choice(where: str, record: Mapping[str, Any]) -> tuple[str, list[str], int]:
    """``(prompt, choices, answer)`` of a multiple-choice record, checked."""
    for name in ("prompt", "choices", "answer"):
        if name not in record:
            raise DataError(
                f"{where}: multiple choice needs 'prompt', 'choices' and 'answer' fields"
            )
    prompt = _field(where, record, "prompt", str)
    choices = _field(where, record, "choices", list)
    if not choices or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{where}: field 'choices' must be a non-empty list of strings")
    for choice in choices:
        refuse_surrogates(where, "choices", choice)
    answer = _field(where, record, "answer", int)
    if not 0 <= answer < len(choices):
        raise DataError(
            f"{where}: field 'answer' is {answer}, not an index into {len(choices)} choices"
        )
    return prompt, choices, answer

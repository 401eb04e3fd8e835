"""Result dicts from ``evaluate`` as tables: markdown for files, plain text for terminals.

Two layouts:

* ``long`` — one row per result: model, data, metric, value, examples, tokens, bytes;
* ``wide`` — one row per model, one column per ``metric (data)``: what
  ``fusekit compare`` prints, so strategies read across a line.

Values are formatted per metric: bits per byte with 4 decimals, perplexity
with 3, accuracies as percentages with 1.  A missing value prints as ``–``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_ACCURACIES = {"exact_match", "multiple_choice"}
_MISSING = "–"


def format_value(metric: str, value: Any) -> str:
    """A metric value for humans (see the module docstring)."""
    if value is None:
        return _MISSING
    if not isinstance(value, (int, float)):
        return str(value)
    if metric in _ACCURACIES:
        return f"{100.0 * value:.1f}%"
    if metric == "perplexity":
        return f"{value:.3f}"
    return f"{value:.4f}"


def _count(value: Any) -> str:
    return _MISSING if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _model_label(result: Mapping[str, Any]) -> str:
    for key in ("label", "model_name", "model"):
        value = result.get(key)
        if value:
            return str(value)
    return _MISSING


def _data_label(result: Mapping[str, Any]) -> str:
    data = result.get("data")
    if not data:
        return _MISSING
    text = str(data)
    return text if text.startswith("<") else Path(text).name or text


def table_rows(
    results: Sequence[Mapping[str, Any]], layout: str = "long"
) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of formatted cells for either layout."""
    if layout == "long":
        header = ["model", "data", "metric", "value", "examples", "tokens", "bytes"]
        rows = []
        for result in results:
            counts = result.get("counts") or {}
            metric = str(result.get("metric", ""))
            rows.append(
                [
                    _model_label(result),
                    _data_label(result),
                    metric,
                    format_value(metric, result.get("value")),
                    _count(counts.get("examples")),
                    _count(counts.get("tokens")),
                    _count(counts.get("bytes")),
                ]
            )
            for name, value in _likelihood_details(result):
                rows.append([rows[-1][0], rows[-1][1], name, format_value("bpb", value),
                             rows[-1][4], "", ""])  # fmt: skip
        return header, rows
    if layout != "wide":
        raise ValueError(f"layout must be 'long' or 'wide', got {layout!r}")
    columns: list[tuple[str, str]] = []
    models: list[str] = []
    cells: dict[tuple[str, tuple[str, str]], str] = {}
    for result in results:
        model = _model_label(result)
        column = (str(result.get("metric", "")), _data_label(result))
        if model not in models:
            models.append(model)
        if column not in columns:
            columns.append(column)
        cells[(model, column)] = format_value(column[0], result.get("value"))
        for name, value in _likelihood_details(result):
            extra = (name, column[1])
            if extra not in columns:
                columns.append(extra)
            cells[(model, extra)] = format_value("bpb", value)
    header = ["model"] + [f"{metric} ({data})" for metric, data in columns]
    rows = [[model] + [cells.get((model, c), _MISSING) for c in columns] for model in models]
    return header, rows


def _likelihood_details(result: Mapping[str, Any]) -> list[tuple[str, float]]:
    """An exact-match result's completion bits per byte, shown in a row of its own."""
    value = (result.get("details") or {}).get("completion_bpb")
    return (
        [("completion_bpb", value)]
        if result.get("metric") == "exact_match" and value is not None
        else []
    )


def _is_numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").rstrip("%")
    try:
        float(stripped)
    except ValueError:
        return False
    return True


def markdown_table(results: Sequence[Mapping[str, Any]], layout: str = "long") -> str:
    """A GitHub-flavoured markdown table; numeric columns right-aligned."""
    header, rows = table_rows(results, layout)
    numeric = [
        bool(rows) and all(_is_numeric(row[i]) or row[i] == _MISSING for row in rows)
        for i in range(len(header))
    ]
    escape = [[cell.replace("|", "\\|") for cell in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(escape[0]) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in escape[1:]]
    return "\n".join(lines)


def terminal_table(results: Sequence[Mapping[str, Any]], layout: str = "long") -> str:
    """A plain aligned table for terminals: two spaces between columns, a rule under the header."""
    header, rows = table_rows(results, layout)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = [
        bool(rows) and all(_is_numeric(row[i]) or row[i] == _MISSING for row in rows)
        for i in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if n else cell.ljust(w)
            for cell, w, n in zip(cells, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])

"""The held-out code no model has seen: the same Python, every identifier renamed."""

from __future__ import annotations

import ast
import io
import keyword
import tokenize

from experiments.renamed_code import rename

SOURCE = '''"""A module."""
import os  # a comment


class PathHolder:
    LIMIT = 3

    def __init__(self, path):
        self._path = os.path.join(path, "x")

    def parts(self):
        return [p for p in self._path.split("/") if len(p) < self.LIMIT]
'''


def _names(text: str) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return [t.string for t in tokens if t.type == tokenize.NAME]


def test_renaming_keeps_python_and_its_lines_and_changes_every_own_name() -> None:
    renamed = rename(SOURCE)
    ast.parse(renamed)
    assert renamed.count("\n") == SOURCE.count("\n")  # line k stays line k
    assert "# a comment" not in renamed and '"""A module."""' in renamed
    before, after = _names(SOURCE), _names(renamed)
    assert len(before) == len(after)
    mapping: dict[str, str] = {}
    for old, new in zip(before, after, strict=True):
        if keyword.iskeyword(old) or old in {"self", "len", "__init__"}:
            assert new == old
        else:
            assert new != old and mapping.setdefault(old, new) == new  # one word per name
    assert len(set(mapping.values())) == len(mapping)  # and no two names share one
    assert mapping["PathHolder"][0].isupper() and mapping["LIMIT"].isupper()
    assert mapping["_path"].startswith("_")
    assert rename(SOURCE) == renamed  # the same on every run

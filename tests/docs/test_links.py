"""Every relative link in README.md and docs/ names a file that exists, and a heading
of that file when it has a ``#fragment`` (GitHub's anchors: lower case, punctuation
dropped, spaces to hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.collect import doc_files

_LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def _links(path: Path) -> list[tuple[int, str]]:
    found, fenced = [], False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            prose = re.sub(r"`[^`]*`", "", line)  # links inside code spans are not links
            found += [(n, m[1] or m[2]) for m in _LINK.finditer(prose)]
    return found


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for n, target in _links(doc):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{doc.name}:{n}: {target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{doc.name}:{n}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_slugs_follow_github() -> None:
    assert _slug(" CALM decoding and training (`bench/calm.py`)") == (
        "calm-decoding-and-training-benchcalmpy"
    )
    assert _slug(" Block expansion vs fine-tuning, English → code") == (
        "block-expansion-vs-fine-tuning-english--code"
    )

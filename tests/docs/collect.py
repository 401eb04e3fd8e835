"""Every fenced block of README.md and docs/**/*.md, cut into the items a reader would run.

A shell block gives one item per command: comments stripped, ``\\`` continuations
joined, ``a && b`` split into ``a`` and ``b`` (each is typed and can fail on its own).
A python, yaml or toml block is one item.  ``text`` blocks (sample output) are never
run; any other language, or a fence with none, is an item of that language, so the
coverage test names it instead of letting it pass unseen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SHELL = {"bash", "sh", "shell", "console", "zsh"}
LANGS = {**dict.fromkeys(SHELL, "shell"), "python": "python", "py": "python"}
LANGS |= {"yaml": "yaml", "yml": "yaml", "toml": "toml", "text": "text"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[^\s`]*)")
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass(frozen=True)
class DocItem:
    """One runnable thing in the docs: where it is and its text as written."""

    file: str  # relative to the repository, e.g. "docs/quickstart.md"
    line: int  # 1-based: the command's first line, or the block's first line
    lang: str  # shell | python | yaml | toml | text | whatever the fence said ("" if none)
    text: str  # the command line (joined), or the block's source (dedented)

    @property
    def key(self) -> str:
        return normalise(self.text)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def normalise(text: str) -> str:
    """The text with every run of whitespace one space: table keys may be laid out freely."""
    return " ".join(text.split())


def doc_files(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


def _blocks(path: Path) -> Iterator[tuple[int, str, str]]:
    """(first line of the body, language as written, body dedented by the fence's indent)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
        ):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        yield i + 2, opened["lang"].lower(), "\n".join(body)
        i = j + 1


def strip_comment(line: str) -> str:
    """The line without a shell comment (a ``#`` outside quotes, at the start or after a blank)."""
    quote = ""
    for k, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k]
    return line


def split_and(command: str) -> list[str]:
    """``a && b`` -> [``a``, ``b``], leaving ``&&`` inside quotes alone."""
    parts, quote, start, k = [], "", 0, 0
    while k < len(command):
        ch = command[k]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif command.startswith("&&", k):
            parts.append(command[start:k])
            start = k + 2
            k += 1
        k += 1
    parts.append(command[start:])
    return [p.strip() for p in parts if p.strip()]


def shell_commands(body: str, first: int) -> Iterator[tuple[int, str]]:
    """(line number, command) for every command of a shell block."""
    pending, started = "", 0
    for n, raw in enumerate(body.splitlines(), first):
        line = strip_comment(raw).rstrip()
        if not pending:
            started = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command, pending = (pending + line).strip(), ""
        for part in split_and(command):
            yield started, part
    if pending.strip():
        yield started, pending.strip()


def doc_items(repo: Path = REPO) -> list[DocItem]:
    """Every item of every doc file, in reading order."""
    items: list[DocItem] = []
    for path in doc_files(repo):
        rel = path.relative_to(repo).as_posix()
        for first, written, body in _blocks(path):
            lang = LANGS.get(written, written)
            if lang == "shell":
                items += [DocItem(rel, n, lang, c) for n, c in shell_commands(body, first)]
            elif body.strip():
                items.append(DocItem(rel, first, lang, body.strip("\n") + "\n"))
    return items


def inline_code(repo: Path = REPO) -> list[DocItem]:
    """Every inline code span outside fenced blocks (``lang`` "inline"), e.g. the
    reproduction commands docs/results.md names in its prose."""
    items: list[DocItem] = []
    for path in doc_files(repo):
        rel, fence = path.relative_to(repo).as_posix(), ""
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            opened = _FENCE.match(line)
            if opened is not None:  # an opening fence, or the closing one of the open block
                fence = "" if fence and opened["fence"][0] == fence[0] else fence or opened["fence"]
                continue
            if not fence:
                items += [DocItem(rel, n, "inline", m[1]) for m in _SPAN.finditer(line)]
    return items

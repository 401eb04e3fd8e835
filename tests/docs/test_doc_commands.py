"""Every command and code block in README.md and docs/ runs in a test.

``tests/docs/collect.py`` cuts the docs' fenced blocks into items (one per shell
command; one per python, yaml, toml or text block).  ``TABLE`` (``tests/docs/table.py``) maps every item,
by its text with whitespace normalised, to how it is exercised:

- **fast** (the default ``python -m pytest``): typed as written into ``bash`` in a
  workspace of tiny placeholders (``tests/docs/conftest.py``).  A command whose own cost
  is minutes runs with ``--dry-run`` or a smaller ``--steps`` here, and a Python block
  that trains from-scratch parents runs on the same recipes at toy scale;
- **slow** (``python -m pytest -m slow``): the quick-start reproductions and the other
  minutes-long commands, exactly as written, at full scale;
- **real** (``tests/real``'s GGUF packages): the real-model commands on the real files;
- **static**: what no process should run (``pip install``, the suite itself) is checked
  against what it names (the constraints file, CI's pins, the markers), and config
  blocks are parsed against the schema that reads them.

A doc item missing from the table, or an entry whose text left the docs, fails
``test_every_doc_item_has_an_entry`` / ``test_every_entry_is_still_in_the_docs``: a new
command cannot ship without a test, and a reworded one cannot keep a dead entry.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs.collect import REPO, DocItem, doc_items, inline_code, normalise
from tests.docs.conftest import Workspace

if sys.version_info >= (3, 11):
    pass
else:  # pytest depends on tomli before 3.11
    pass


from tests.docs.checks import Ran, Run, _listing
from tests.docs.table import ENTRIES, REPRODUCTIONS


def _items_by_key() -> dict[str, list[DocItem]]:
    found: dict[str, list[DocItem]] = {}
    for item in doc_items():
        found.setdefault(item.key, []).append(item)
    return found


def _params(tier: str) -> list[Any]:
    marks = {"slow": [pytest.mark.slow], "real": [pytest.mark.real]}.get(tier, [])
    params = []
    for key, entry in ENTRIES.items():
        runs: tuple[Run, ...] = getattr(entry, tier)
        for n, run in enumerate(runs):
            name = f"{entry.id}-{n + 1}" if len(runs) > 1 else entry.id
            params.append(pytest.param(key, n, run, id=name, marks=marks))
    return params


# ---------------------------------------------------------------- coverage


def test_every_doc_item_has_an_entry() -> None:
    """A command, code or config block added to the docs without a test fails here."""
    missing = [i for i in doc_items() if i.key not in ENTRIES]
    assert not missing, "\n".join(
        f"{i.where}: this {i.lang or 'unlabelled'} item has no entry in "
        f"tests/docs/test_doc_commands.py::TABLE; add one saying how it is run "
        f"(fast/slow/real Run, or a static check):\n    {i.text.strip()[:200]}"
        for i in missing
    )


def test_every_entry_is_still_in_the_docs() -> None:
    """An entry whose text left the docs (reworded, removed) is stale: update or drop it."""
    found = _items_by_key()
    stale = [e.id for k, e in ENTRIES.items() if k not in found]
    assert not stale, f"TABLE entries no longer in README.md or docs/: {stale}"


def test_every_entry_is_exercised() -> None:
    """Each entry runs somewhere, or points at an entry that checks it."""
    for entry in ENTRIES.values():
        ways = entry.fast or entry.slow or entry.real or entry.static
        if entry.covered_by is not None:
            target = ENTRIES[normalise(entry.covered_by)]
            assert target.fast or target.slow or target.real, entry.id
        else:
            assert ways, f"{entry.id} is not exercised"
    assert len({e.id for e in ENTRIES.values()}) == len(ENTRIES), "entry ids must be unique"


def test_every_quickstart_is_reproduced() -> None:
    """A quick-start recipe added without a slow test that runs it as documented fails."""
    slow = [k for k, e in ENTRIES.items() if e.slow] + list(REPRODUCTIONS)
    for path in sorted((REPO / "recipes" / "quickstart").glob("*.yaml")):
        rel = path.relative_to(REPO).as_posix()
        assert any(k.endswith(rel) for k in slow), f"{rel}: add its command to REPRODUCTIONS"


def test_reproductions_are_in_the_docs() -> None:
    """Each REPRODUCTIONS command is one the docs tell a reader to type."""
    inline = {i.key for i in inline_code()}
    assert not set(REPRODUCTIONS) - inline, set(REPRODUCTIONS) - inline


def test_collector_reads_what_a_reader_types(tmp_path: Path) -> None:
    """Comments stripped, continuations joined, ``&&`` split, blocks in lists dedented."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "```bash\n"
        "fusekit run a.yaml \\\n   -o out   # a comment\n"
        "pip install x && fusekit strategies\n"
        "echo '# not a comment && not a split'\n"
        "```\n\n"
        "1. item\n\n   ```python\n   print(1)\n   ```\n"
    )
    got = [(i.line, i.lang, i.text) for i in doc_items(tmp_path)]
    assert got == [
        (2, "shell", "fusekit run a.yaml     -o out"),
        (4, "shell", "pip install x"),
        (4, "shell", "fusekit strategies"),
        (5, "shell", "echo '# not a comment && not a split'"),
        (11, "python", "print(1)\n"),
    ]


# ---------------------------------------------------------------- running them


def _item(key: str) -> DocItem:
    items = _items_by_key().get(key)
    if not items:
        pytest.fail(f"{ENTRIES[key].id}: no longer in the docs (see the stale-entry test)")
    return items[0]


def _run(request: pytest.FixtureRequest, item: DocItem, run: Run) -> None:
    ws: Workspace = request.getfixturevalue(run.workspace)
    if run.setup is not None:
        run.setup(ws, item)
    line = item.text if run.line is None else run.line.replace("{doc}", item.text)
    before = _listing(ws)
    typed = run.line is not None or item.lang != "python"
    res = ws.sh(line) if typed else ws.py(item.text)
    run.check(Ran(ws, item, line, res, _listing(ws) - before))


@pytest.mark.parametrize(("key", "n", "run"), _params("fast"))
def test_fast(request: pytest.FixtureRequest, key: str, n: int, run: Run) -> None:
    """The doc item as a reader runs it, on tiny placeholders, in seconds."""
    _run(request, _item(key), run)


@pytest.mark.parametrize(("key", "n", "run"), _params("slow"))
def test_slow(request: pytest.FixtureRequest, key: str, n: int, run: Run) -> None:
    """The quick-start reproductions and other minutes-long commands, exactly as written."""
    _run(request, _item(key), run)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(REPRODUCTIONS), ids=lambda c: Path(c).stem)
def test_slow_reproduction(request: pytest.FixtureRequest, command: str) -> None:
    """The quick-starts docs/results.md reports, run as it says they were measured."""
    item = next(i for i in inline_code() if i.key == command)
    _run(request, item, REPRODUCTIONS[command])


@pytest.mark.parametrize(("key", "n", "run"), _params("real"))
def test_real(request: pytest.FixtureRequest, key: str, n: int, run: Run) -> None:
    """The real-model commands on the GGUF files the real tier installs."""
    _run(request, _item(key), run)


@pytest.mark.parametrize(
    "key", [pytest.param(k, id=e.id) for k, e in ENTRIES.items() if e.static is not None]
)
def test_static(key: str) -> None:
    """Items no test should run (installs, the suite) checked against what they name."""
    items = _items_by_key().get(key)
    assert items, f"{ENTRIES[key].id}: no longer in the docs"
    static = ENTRIES[key].static
    assert static is not None
    for item in items:
        static(item)

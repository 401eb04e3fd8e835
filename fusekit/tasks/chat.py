"""``stdlib_chat``: conversations about the standard library, built from its docstrings.

Chat models are trained and scored on conversations, and the quick-starts and tests
need some without downloading any: every Python install carries thousands of
documented functions and classes.  Each public top-level function or class of the
``code`` corpus's modules (the same files, the same exclusions) with a docstring
gives one ``{"messages"}`` record:

- system: a fixed instruction;
- user: ``What does `json.dumps` do?`` — assistant: the docstring's first
  paragraph, on one line;
- user: ``How is it called?`` — assistant: the call with its parameters as written
  in the source (``json.dumps(obj, *, skipkeys=False, ...)``; a class's are its
  ``__init__``'s, without ``self``).

So a record has two assistant turns, one of prose and one of code, and a system
prompt: what a template's masks must get right.  Docstrings shorter than
``_MIN_ANSWER`` or with a first paragraph longer than ``_MAX_ANSWER`` characters are
left out.  The split and the order come from a hash of the question, like the text
corpora's: a question is held out or not on every machine, whatever the file order.
The set depends on the Python version (3.11 here: 1,521 conversations, 163 held
out).
"""

from __future__ import annotations

import ast
import functools
import hashlib

from fusekit.tasks.corpora import code_files

SYSTEM = "You answer questions about the Python standard library in one or two sentences."
_MIN_ANSWER = 24
_MAX_ANSWER = 400
_HELDOUT_MODULUS = 10


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef, drop_self: bool) -> str:
    args = node.args
    if drop_self and args.posonlyargs:
        args.posonlyargs = args.posonlyargs[1:]
    elif drop_self and args.args:
        args.args = args.args[1:]
    return ast.unparse(args)


def _call(node: ast.AST) -> str | None:
    """The parameters a function or class is called with, or None (no ``__init__``)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return _parameters(node, drop_self=False)
    assert isinstance(node, ast.ClassDef)
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return _parameters(item, drop_self=True)
    return None


def _conversation(module: str, node: ast.AST) -> dict[str, list[dict[str, str]]] | None:
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    doc = ast.get_docstring(node)
    if doc is None:
        return None
    answer = _first_paragraph(doc)
    call = _call(node)
    if not _MIN_ANSWER <= len(answer) <= _MAX_ANSWER or call is None:
        return None
    name = f"{module}.{node.name}"
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"What does `{name}` do?"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "How is it called?"},
            {"role": "assistant", "content": f"`{name}({call})`"},
        ]
    }


@functools.cache
def _split() -> dict[str, tuple[dict[str, list[dict[str, str]]], ...]]:
    """Both splits, deduplicated by question, in hash order (built once per process)."""
    by_digest: dict[str, dict[str, list[dict[str, str]]]] = {}
    for module, source in code_files():
        if any(part.startswith("_") for part in module.split(".")):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name.startswith("_"):
                    continue
                record = _conversation(module, node)
                if record is not None:
                    question = record["messages"][1]["content"]
                    by_digest.setdefault(hashlib.sha256(question.encode()).hexdigest(), record)
    ordered = sorted(by_digest.items())

    def held(digest: str) -> bool:
        return int(digest[:12], 16) % _HELDOUT_MODULUS == 0

    return {
        "train": tuple(r for d, r in ordered if not held(d)),
        "heldout": tuple(r for d, r in ordered if held(d)),
    }


def chat_examples(split: str, n: int | None) -> list[dict[str, list[dict[str, str]]]]:
    """The first ``n`` (default all) conversations of ``split``, copied (callers may edit)."""
    records = _split()[split][:n]
    return [{"messages": [dict(m) for m in r["messages"]]} for r in records]

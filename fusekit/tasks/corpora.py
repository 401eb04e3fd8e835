"""Two offline text domains shipped with every Python install: ``code`` and ``english``.

Quick-start recipes and tests need two clearly different kinds of text (FuseLLM's
sources are specialists; block expansion learns a new domain and forgets an old
one) without downloading anything. Python itself carries both:

- ``code`` — the ``.py`` files of the standard library (``sysconfig``'s ``stdlib``
  path). Test suites, ``site-packages``, IDLE, ``lib2to3``, the demo programs, the
  generated codec tables (``encodings``) and generated config modules are left
  out, and so is ``pydoc_data`` (it *is* the English domain). One document per
  file.
- ``english`` — the help texts behind ``help("topics")`` (``pydoc_data.topics``):
  reference-manual prose. Each topic is split at its top-level headings into
  sections, which also removes the topics that repeat each other (``try`` is a
  section of ``compound``) once documents are deduplicated. Long code-like
  literal blocks (listings, grammar, doctests, tables; more than
  ``_MAX_LITERAL_LINES`` lines) are dropped so that the English domain is
  prose, not a second source of code.

Splits are decided by a hash of the document's *content*: identical documents are
kept once and can never land in both splits, and the split does not depend on
file order or on the Python process (``hash()`` is salted, SHA-256 is not). The
same hash orders the documents, which gives a shuffled yet reproducible order, so
a character budget (``max_chars``) takes a spread of modules rather than
everything under ``asyncio/``. The corpus does depend on the Python version that
runs it (3.11 here); the split of a given document never does. On 3.11: code
≈ 445 documents, 8.8M characters (39 held out, 0.5M); English ≈ 140 documents,
440k characters (14 held out, 63k).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import random
import re
import sysconfig
from collections.abc import Sequence

from fusekit.errors import DataError

DOMAINS: tuple[str, ...] = ("code", "english")
SPLITS: tuple[str, ...] = ("train", "heldout")

#: One document in ``_HELDOUT_MODULUS`` goes to the held-out split (≈ 10 %).
_HELDOUT_MODULUS = 10
#: Documents with fewer non-blank characters are dropped (empty ``__init__.py``…).
_MIN_DOC_CHARS = 64
#: Indented blocks of more lines than this are code listings, not prose.
_MAX_LITERAL_LINES = 8
#: English sections shorter than this are merged into the following section.
_MIN_SECTION_CHARS = 300

# Directory names (anywhere in the path) that are not ordinary library code.
_EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "site-packages",
        "dist-packages",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "encodings",
        "pydoc_data",
        "ensurepip",
        "__pycache__",
        "__phello__",
        "lib-dynload",
    }
)
_EXCLUDED_DIR_PREFIXES = ("config-",)
_EXCLUDED_FILE_PREFIXES = ("_sysconfigdata",)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _is_heldout(digest: str) -> bool:
    return int(digest[:12], 16) % _HELDOUT_MODULUS == 0


def _excluded_dir(name: str) -> bool:
    return name in _EXCLUDED_DIRS or name.startswith(_EXCLUDED_DIR_PREFIXES)


def code_files() -> list[tuple[str, str]]:
    """``(module, source)`` of every eligible stdlib ``.py`` file (sorted walk, pruned);
    ``module`` is its dotted import name (``os``, ``json.decoder``).  Read on every call:
    its users cache what they build from it."""
    root = sysconfig.get_paths()["stdlib"]
    files: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Prune in place: os.walk then never enters site-packages (gigabytes).
        dirnames[:] = sorted(d for d in dirnames if not _excluded_dir(d))
        for name in sorted(filenames):
            if not name.endswith(".py") or name.startswith(_EXCLUDED_FILE_PREFIXES):
                continue
            path = os.path.join(dirpath, name)
            module = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
            try:
                with open(path, encoding="utf-8") as handle:
                    files.append((module.removesuffix(".__init__"), handle.read()))
            except (OSError, UnicodeDecodeError):
                continue  # unreadable or non-UTF-8 file: simply not part of the corpus
    return files


def _code_sources() -> list[str]:
    return [text for _, text in code_files()]


_HEADING_UNDERLINE = re.compile(r"^([*=])\1{2,}$")


_CODE_LINE = re.compile(r"[=(){}\[\]<>|+#]|^\s*(>>>|\.\.\.|def |class |import |from |[A-Z_]+$)")
_QUOTED = re.compile(r'"[^"]*"')


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _looks_like_code(block: list[str]) -> bool:
    """Most lines carry code punctuation once prose-style ``"quoted"`` names are removed.

    On the 3.11 help topics this separates listings, grammar rules, doctests and
    tables (share ≥ 0.5) from indented prose such as notes and bullet
    continuations (share ≤ 0.25).
    """
    lines = [line for line in block if line.strip()]
    hits = sum(bool(_CODE_LINE.search(_QUOTED.sub("", line))) for line in lines)
    return hits >= 0.4 * len(lines)


def _drop_long_literals(text: str) -> str:
    """Remove long literal blocks: an indented block introduced by a line ending in ``:``.

    That is how reStructuredText's ``::`` blocks look once rendered to plain text.
    Blocks of more than ``_MAX_LITERAL_LINES`` non-blank lines that look like code
    are dropped; short ones (a grammar rule, a one-line example) stay, as they are
    part of how the prose reads.
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not line.strip() or not line.rstrip().endswith(":"):
            continue
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j == len(lines) or _indent(lines[j]) <= _indent(line):
            continue
        k = j
        while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) >= _indent(lines[j])):
            k += 1
        while k > j and not lines[k - 1].strip():
            k -= 1  # trailing blank lines belong to the prose that follows
        block = lines[j:k]
        if sum(1 for b in block if b.strip()) > _MAX_LITERAL_LINES and _looks_like_code(block):
            out.extend(lines[i:j])
            i = k
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out))


def _sections(topic: str) -> list[str]:
    """Split one help topic before every ``***``/``===`` underlined heading."""
    lines = topic.split("\n")
    starts = [0]
    for i in range(1, len(lines)):
        underlined = len(lines[i]) >= len(lines[i - 1].rstrip()) > 0
        if _HEADING_UNDERLINE.match(lines[i]) and underlined and i - 1 > starts[-1]:
            starts.append(i - 1)
    starts.append(len(lines))
    sections = ["\n".join(lines[a:b]).strip("\n") for a, b in itertools.pairwise(starts)]
    merged: list[str] = []
    carry = ""
    for section in sections:
        section = f"{carry}\n\n{section}" if carry else section
        if len(section) < _MIN_SECTION_CHARS:
            carry = section
        else:
            merged.append(section)
            carry = ""
    if carry:
        if merged:
            merged[-1] = f"{merged[-1]}\n\n{carry}"
        else:
            merged.append(carry)
    return merged


def _english_sources() -> list[str]:
    from pydoc_data.topics import topics

    texts: list[str] = []
    for key in sorted(topics):
        texts.extend(_drop_long_literals(s) + "\n" for s in _sections(topics[key]))
    return texts


@functools.cache
def _split_documents(domain: str) -> dict[str, tuple[str, ...]]:
    """Both splits of one domain, deduplicated and in hash order (read once per process)."""
    raw = _code_sources() if domain == "code" else _english_sources()
    by_digest: dict[str, str] = {}
    for text in raw:
        if len(text.strip()) >= _MIN_DOC_CHARS:
            by_digest.setdefault(_digest(text), text)
    ordered = sorted(by_digest.items())
    return {
        "train": tuple(t for d, t in ordered if not _is_heldout(d)),
        "heldout": tuple(t for d, t in ordered if _is_heldout(d)),
    }


def _check(domain: str, split: str, max_chars: int | None) -> None:
    if domain not in DOMAINS:
        raise DataError(f"unknown text domain {domain!r}; choose one of: {', '.join(DOMAINS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if max_chars is not None and (isinstance(max_chars, bool) or max_chars <= 0):
        raise DataError(f"max_chars must be a positive integer or None, got {max_chars!r}")


def _take(docs: Sequence[str], max_chars: int | None) -> list[str]:
    """Documents in order until the budget; the one that overflows it is cut at a line end.

    Cutting (rather than skipping) keeps small budgets useful when a single file is
    larger than the budget, and keeps the result a prefix of any larger budget's.
    """
    if max_chars is None:
        return list(docs)
    out: list[str] = []
    left = max_chars
    for doc in docs:
        if len(doc) <= left:
            out.append(doc)
            left -= len(doc)
            continue
        cut = doc.rfind("\n", 0, left)
        piece = doc[: cut + 1] if cut >= 0 else doc[:left]
        if piece.strip():
            out.append(piece)
        break
    return out


def domain_documents(
    domain: str, split: str = "train", *, max_chars: int | None = None
) -> list[str]:
    """The documents of one domain's split, in a fixed order, at most ``max_chars`` in total.

    The first call per domain reads the corpus (≈ 0.5 s for the stdlib); later calls
    are served from an in-process cache. Train and held-out never share a document.
    """
    _check(domain, split, max_chars)
    return _take(_split_documents(domain)[split], max_chars)


def domain_size(domain: str, split: str = "train") -> int:
    """Total characters available in one domain's split."""
    _check(domain, split, None)
    return sum(len(d) for d in _split_documents(domain)[split])


def mixed_documents(
    domains: Sequence[str] = DOMAINS,
    split: str = "train",
    max_chars: int | None = None,
    seed: int = 0,
) -> list[str]:
    """An equal-character mix of several domains, shuffled together by ``seed``.

    Each domain contributes ``max_chars // len(domains)`` characters (its documents
    taken in their fixed order), or, with ``max_chars=None``, as many characters as
    the smallest domain holds — so the mix is balanced rather than dominated by the
    much larger code corpus. The seed only changes the interleaving, not which
    documents are chosen.
    """
    if not domains:
        raise DataError("mixed_documents needs at least one domain, got none")
    if len(set(domains)) != len(domains):
        raise DataError(f"mixed_documents got a domain twice: {list(domains)}")
    for domain in domains:
        _check(domain, split, max_chars)
    if max_chars is None:
        share = min(domain_size(d, split) for d in domains)
    else:
        share = max_chars // len(domains)
    if share <= 0:
        raise DataError(f"max_chars={max_chars} is too small to mix {len(domains)} domains")
    docs = [doc for domain in domains for doc in domain_documents(domain, split, max_chars=share)]
    random.Random(f"mixed|{','.join(domains)}|{split}|{seed}").shuffle(docs)
    return docs

"""Held-out Python code that no model was pretrained on: the ``code`` task's held-out
documents with every identifier renamed.

The ``code`` task is the standard library's source, which sits verbatim in any
web-scale pretraining corpus, so a pretrained model may have memorised its held-out
split: fine-tuning then moves the model away from text it already knew by heart, and
held-out loss rises even when the training is sound.  Renaming each identifier
(variables, functions, classes, attributes, imported names) to a made-up word and
dropping comments (licence headers are the most verbatim text there is) breaks every
verbatim match while keeping Python's syntax, keywords, builtins, layout and strings, so "is this code?" stays the same question and "have I seen
this file?" becomes no.  The mapping is per document and seeded by the document's
content, so the file is the same on every machine.

    python experiments/renamed_code.py out/real/data

writes ``code-heldout.jsonl`` (the documents as they are) and
``code-heldout-renamed.jsonl`` (the same documents renamed) into the folder, so the
two sets are paired document by document.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import io
import itertools
import json
import keyword
import random
import tokenize
from pathlib import Path

from fusekit.tasks.corpora import domain_documents

#: Names kept as they are: the language's own, so the text stays ordinary Python.
KEPT = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
KEPT |= {"self", "cls", "__init__", "__name__", "__main__", "__all__", "__file__"}

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _word(rng: random.Random) -> str:
    syllables = rng.randint(2, 4)
    return "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))


def rename(source: str) -> str:
    """``source`` with each identifier outside ``KEPT`` replaced by a made-up word
    (the same word for every occurrence in this document) and comments emptied (their
    lines stay, so line ``k`` of the result is line ``k`` of ``source``)."""
    rng = random.Random(hashlib.sha256(source.encode()).digest())
    mapping: dict[str, str] = {}
    taken = set(KEPT)
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string not in KEPT:
            if tok.string not in mapping:
                word = _word(rng)
                while word in taken:
                    word = _word(rng)
                taken.add(word)
                # A name's shape survives: leading underscores, CONSTANT or Class case.
                stem = tok.string.lstrip("_")
                lead = tok.string[: len(tok.string) - len(stem)]
                if stem.isupper():
                    word = word.upper()
                elif stem[:1].isupper():
                    word = word.capitalize()
                mapping[tok.string] = lead + word
            tok = tok._replace(string=mapping[tok.string])
        elif tok.type == tokenize.COMMENT:
            tok = tok._replace(string="")  # licence headers and remarks are verbatim text
        out.append(tok)
    return tokenize.untokenize(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the two .jsonl files go")
    parser.add_argument("--max-chars", type=int, default=30_000)
    parser.add_argument("--per-document", type=int, default=2_500,
                        help="characters taken from the head of each document")  # fmt: skip
    args = parser.parse_args()
    pairs = []
    total = 0
    for doc in domain_documents("code", "heldout"):
        if total >= args.max_chars:
            break
        # Renamed whole (a cut document may not tokenise), then both cut after the same
        # line: renaming keeps the line structure, so the pair stays aligned.
        lines, renamed = doc.splitlines(keepends=True), rename(doc).splitlines(keepends=True)
        keep = max(
            1, sum(1 for n in itertools.accumulate(map(len, lines)) if n <= args.per_document)
        )
        pairs.append(("".join(lines[:keep]), "".join(renamed[:keep])))
        total += len(pairs[-1][0])
    args.folder.mkdir(parents=True, exist_ok=True)
    for name, k in (("code-heldout", 0), ("code-heldout-renamed", 1)):
        path = args.folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": p[k]}) + "\n" for p in pairs))
        print(f"{path}: {len(pairs)} documents, {sum(len(p[k]) for p in pairs)} characters")


if __name__ == "__main__":
    main()

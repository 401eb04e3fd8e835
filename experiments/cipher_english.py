"""A language no pretrained model knows: English with its letters permuted.

Block expansion's claim is about learning a *new* domain while keeping an old one,
and code cannot test it on SmolLM2: the standard library's source is in every
pretraining corpus and its held-out English (Python's documentation) moves with the
code, so nothing is forgotten (docs/results.md, "SmolLM2-135M to code").  A fixed
substitution of the 26 letters turns the ``english`` task's documents into a
language with English's grammar, word lengths, punctuation and layout but none of
its words: the base model starts near the cost of spelling letter by letter, a
model can learn it in tens of steps, and training on it alone pulls the model away
from plain English, so forgetting has something to show.  Case is kept (``A`` maps
to the capital of ``a``'s image); digits, spaces and punctuation stay as they are.
The permutation is fixed by ``--seed``, so the files are the same on every machine.

    python experiments/cipher_english.py out/real/data

writes ``cipher-train.jsonl`` (the ``english`` task's train split, enciphered) and
``cipher-heldout.jsonl`` (the first ``--heldout-chars`` characters of its held-out
split, enciphered: the text the ``english`` eval set with that ``max_chars`` scores
in plain letters, so gain and forgetting are measured on the same documents).
Enciphered text costs about 2.3 times the tokens of plain English, hence the cap.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

from fusekit.tasks.corpora import domain_documents


def cipher(seed: int = 0) -> dict[int, int]:
    """A ``str.translate`` table: a seeded permutation of a–z with no letter kept, and
    the same permutation on A–Z."""
    rng = random.Random(f"cipher|{seed}")
    letters = list(string.ascii_lowercase)
    image = letters[:]
    while any(a == b for a, b in zip(letters, image, strict=True)):
        rng.shuffle(image)
    table = {ord(a): ord(b) for a, b in zip(letters, image, strict=True)}
    table |= {ord(a.upper()): ord(b.upper()) for a, b in zip(letters, image, strict=True)}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the two .jsonl files go")
    parser.add_argument("--seed", type=int, default=0, help="chooses the permutation")
    parser.add_argument("--heldout-chars", type=int, default=20_000)
    args = parser.parse_args()
    table = cipher(args.seed)
    args.folder.mkdir(parents=True, exist_ok=True)
    for split, cap in (("train", None), ("heldout", args.heldout_chars)):
        docs = [d.translate(table) for d in domain_documents("english", split, max_chars=cap)]
        path = args.folder / f"cipher-{split}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        print(f"{path}: {len(docs)} documents, {sum(map(len, docs))} characters")


if __name__ == "__main__":
    main()

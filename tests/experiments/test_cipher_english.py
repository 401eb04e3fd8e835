"""The new language: English with a fixed permutation of its letters."""

from __future__ import annotations

import string

from experiments.cipher_english import cipher


def test_the_cipher_moves_every_letter_keeps_case_and_leaves_the_rest() -> None:
    table = cipher(0)
    text = "Hello, World! 42 times\n"
    out = text.translate(table)
    assert len(out) == len(text)
    for a, b in zip(text, out, strict=True):
        if a in string.ascii_letters:
            assert b != a and b.isupper() == a.isupper() and b in string.ascii_letters
        else:
            assert b == a
    lower = [table[ord(c)] for c in string.ascii_lowercase]
    assert len(set(lower)) == 26  # a permutation: the text can be read back
    assert cipher(0) == table and cipher(1) != table

"""The pruned MinED search returns exactly what a full ``cdist`` argmin returns."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusekit.strategies.fusellm.mined import nearest, signatures

ALPHABET = "abcmnoz xyZ09_.é\x80\xff€漢"


def _words(rng: random.Random, n: int, longest: int) -> list[str]:
    return ["".join(rng.choices(ALPHABET, k=rng.randint(1, longest))) for _ in range(n)]


def _brute(queries: list[str], choices: list[str]) -> np.ndarray:
    dist = process.cdist(queries, choices, scorer=Levenshtein.distance, dtype=np.int32)
    return dist.argmin(axis=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("workers", [1, 2])
def test_equals_the_full_search(seed: int, workers: int) -> None:
    rng = random.Random(seed)
    choices = _words(rng, 400, 12)
    choices += rng.sample(choices, 60)  # repeated choices: only the first may win
    queries = _words(rng, 300, 20) + rng.sample(choices, 40) + ["", "q" * 40]
    queries += queries[:25]  # repeated queries
    stats: dict[str, int] = {}
    got = nearest(queries, choices, workers=workers, stats=stats)
    np.testing.assert_array_equal(got, _brute(queries, choices))
    assert 0 < stats["pairs"] < len(queries) * len(choices)  # pruning skipped pairs


def test_ties_go_to_the_lowest_position() -> None:
    # "ab" is at distance 1 from "ax", "ay", "ab?": the first of them wins, wherever
    # its signature group sorts
    choices = ["zzzz", "ay", "ax", "abz", "ab_"]
    assert nearest(["ab"], choices).tolist() == [1]
    assert nearest(["ab"], choices[::-1]).tolist() == [_brute(["ab"], choices[::-1])[0]]


def test_signatures_count_character_classes() -> None:
    assert signatures(["aN z9", "", "漢é"]).tolist() == [[0, 1, 1, 3], [0, 0, 0, 0], [2, 0, 0, 0]]


def test_no_choices_is_an_error() -> None:
    with pytest.raises(ValueError, match="no choices"):
        nearest(["a"], [])


def test_row_blocks_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from fusekit.strategies.fusellm import mined

    rng = random.Random(7)
    choices, queries = _words(rng, 200, 8), _words(rng, 200, 8)
    monkeypatch.setattr(mined, "BLOCK", 3 * len(choices))  # a few rows per cdist call
    np.testing.assert_array_equal(nearest(queries, choices, workers=2), _brute(queries, choices))


def test_case_counts() -> None:
    # "mi" is one edit from "mp" and two from "I": the search folds no case, whatever
    # character classes its bound lumps together
    assert nearest(["mi", "cu"], ["I", "C", "mp", "nu"]).tolist() == [2, 3]

"""Alignment: the vectorised DTW equals a plain one; offsets pair identical spans only."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from fusekit.strategies.fusellm import dtw_align, offsets_align
from fusekit.strategies.fusellm.align import (
    dtw_accumulate,
    edit_cost_matrix,
    match_positions,
    offsets_match,
)
from fusekit.strategies.fusellm.data import encode_chunks
from fusekit.strategies.fusellm.prepare import align_chunk
from fusekit.strategies.fusellm.vocab import compute_vocab_map, token_table
from tests.fusellm.conftest import CORPUS


def _lev(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def plain_dtw(source: list[str], target: list[str]) -> list[list[int]]:
    """The released algorithm as written: a double loop, then a walk back by argmin."""
    inf = float("inf")
    n, m = len(source), len(target)
    mat = [[inf] * (m + 1) for _ in range(n + 1)]
    mat[0][0] = 0.0
    for i in range(n):
        for j in range(m):
            cost = _lev(
                source[i].replace("Ġ", "").replace("▁", ""),
                target[j].replace("Ġ", "").replace("▁", ""),
            )
            mat[i + 1][j + 1] = cost + min(mat[i][j + 1], mat[i + 1][j], mat[i][j])
    acc = [row[1:] for row in mat[1:]]
    i, j = n - 1, m - 1
    out: list[list[int]] = [[] for _ in range(m)]
    while i > 0 or j > 0:
        out[j].append(i)
        options = [
            acc[i - 1][j - 1] if i > 0 and j > 0 else inf,
            acc[i - 1][j] if i > 0 else inf,
            acc[i][j - 1] if j > 0 else inf,
        ]
        move = int(np.argmin(options))
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    out[0].append(0)
    return [sorted(x) for x in out]


def _random_tokens(rng: random.Random, n: int) -> list[str]:
    pieces = ["Ġthe", "▁the", "th", "e", "Ġ", "▁", "a", "ab", "b", "Ċ", "<0x0A>", "x", "Ġx", "yz"]
    return [
        rng.choice(pieces) + (rng.choice("abc") if rng.random() < 0.3 else "") for _ in range(n)
    ]


def test_dtw_equals_plain_dtw_on_random_sequences() -> None:
    rng = random.Random(0)
    for _ in range(60):
        src = _random_tokens(rng, rng.randint(1, 25))
        tgt = _random_tokens(rng, rng.randint(1, 25))
        assert dtw_align(src, tgt) == plain_dtw(src, tgt)


def test_dtw_equals_plain_dtw_on_real_tokenisations(bpe: Any, sp: Any) -> None:
    for text in CORPUS[:8]:
        src = sp.convert_ids_to_tokens(sp(text)["input_ids"])
        tgt = bpe.convert_ids_to_tokens(bpe(text)["input_ids"])
        assert dtw_align(src, tgt) == plain_dtw(src, tgt)


def test_dtw_accumulation_is_exact() -> None:
    rng = np.random.default_rng(1)
    cost = rng.integers(0, 5, size=(17, 23))
    want = np.zeros_like(cost)
    for i in range(17):
        for j in range(23):
            prev = [want[i - 1, j] if i else None, want[i, j - 1] if j else None]
            prev.append(want[i - 1, j - 1] if i and j else None)
            best = min([p for p in prev if p is not None], default=0)
            want[i, j] = cost[i, j] + best
    assert np.array_equal(dtw_accumulate(cost), want)
    assert edit_cost_matrix(["ab", "Ġx"], ["ab", "x"]).tolist() == [[0, 2], [2, 1]]


def test_dtw_identical_sequences_is_identity() -> None:
    toks = ["<s>", "Ġthe", "Ġthe", "Ġcat", "Ċ", "Ġthe"]
    assert dtw_align(toks, toks) == [[i] for i in range(len(toks))]
    assert dtw_align([], toks) == [[] for _ in toks]


def test_offsets_known_cases() -> None:
    # text "ab cd": source = [BOS, "ab", " cd"], target = [BOS, "a", "b", " cd"]
    source = [(0, 0), (0, 2), (2, 5)]
    target = [(0, 0), (0, 1), (1, 2), (2, 5)]
    assert offsets_align(source, target) == [[0], [], [], [2]]
    # two zero-width tokens at the same place pair in order; a merge pairs nothing
    assert offsets_align([(0, 0), (0, 0), (0, 3)], [(0, 0), (0, 3)]) == [[0], [2]]
    assert offsets_align([(0, 0), (0, 0)], [(0, 0), (0, 0), (0, 0)]) == [[0], [1], []]
    assert offsets_align([(0, 4)], [(0, 2), (2, 4)]) == [[], []]


def plain_offsets(source: list, target: list) -> list[int]:
    """Span matching with a dict, zero-width twins paired in order of appearance."""
    seen, counts = {}, {}
    for s, span in enumerate(source):
        rank = counts[span] = counts.get(span, -1) + 1
        seen[(*span, rank)] = s
    counts = {}
    out = []
    for span in target:
        rank = counts[span] = counts.get(span, -1) + 1
        out.append(seen.get((*span, rank), -1))
    return out


def test_vectorised_offsets_equal_plain_matching_on_random_spans() -> None:
    rng = random.Random(0)

    def spans(n: int) -> list[tuple[int, int]]:
        out, pos = [], 0
        for _ in range(n):
            width = 0 if rng.random() < 0.15 else rng.randint(1, 3)
            out.append((pos, pos + width))
            pos += width if rng.random() < 0.9 else 0  # sometimes overlapping spans
        return out

    for _ in range(300):
        source = spans(rng.randint(0, 30))
        target = list(source) if rng.random() < 0.2 else spans(rng.randint(0, 30))
        want = plain_offsets(source, target)
        assert offsets_match(np.array(source), np.array(target)).tolist() == want
        assert offsets_align(source, target) == [[] if s < 0 else [s] for s in want]


def test_match_positions_checks_tokens() -> None:
    vmap = np.array([0, 1, 2, 3])
    mapping = [[0], [1], [1, 2], [3]]
    got = match_positions(mapping, [0, 1, 2, 3], [0, 2, 2, 3], vmap)
    assert got.tolist() == [0, -1, -1, 3]  # pos 1: token differs; pos 2: many-to-one
    assert match_positions(
        mapping, [0, 1, 2, 3], [0, 2, 2, 3], vmap, require_same_token=False
    ).tolist() == [0, 1, -1, 3]


def test_same_tokenizer_aligns_every_position(sp: Any) -> None:
    vmap = compute_vocab_map(sp, sp)
    table = token_table(sp)
    for enc in encode_chunks(sp, CORPUS[:6], 64):
        for method in ("mined", "em", "offsets"):
            got = align_chunk(method, enc, enc, vmap, table, table)
            assert got.tolist() == list(range(len(enc)))


def test_cross_tokenizer_offsets_pairs_share_text(bpe: Any, sp: Any) -> None:
    vmap = compute_vocab_map(sp, bpe)
    text = CORPUS[5]
    src, tgt = encode_chunks(sp, [text], 128)[0], encode_chunks(bpe, [text], 128)[0]
    got = align_chunk("offsets", src, tgt, vmap, token_table(sp), token_table(bpe))
    data = text.encode()
    paired = [(t, s) for t, s in enumerate(got) if s >= 0]
    assert 0.1 < len(paired) / len(tgt) < 1.0
    for t, s in paired:
        assert tuple(src.spans[s]) == tuple(tgt.spans[t])
        assert data[slice(*src.spans[s])] == data[slice(*tgt.spans[t])]
    dtw = align_chunk("mined", src, tgt, vmap, token_table(sp), token_table(bpe))
    # DTW pairs tokens that look alike; on this text it finds the same exact pairs and no more
    # than offsets does where the tokens really are the same bytes.
    same = [t for t, s in enumerate(dtw) if s >= 0 and tuple(src.spans[s]) == tuple(tgt.spans[t])]
    assert len(same) >= 0.8 * len(paired)

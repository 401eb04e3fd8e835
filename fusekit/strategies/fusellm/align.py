"""Sequence alignment: which source position speaks for which target position.

Two tokenizers cut the same text differently.  A source's next-token
distribution at position ``s`` can stand in for the target's at position ``t``
only when both have read the same prefix.  Two ways to find such pairs:

* ``dtw_align`` — the released code's dynamic time warping
  (``FuseLLM/src/utils/others.py``: ``dtw``, called by
  ``transform_step_logits`` with ``dist_fn`` as the cost) over the two token
  strings: cost = edit distance with the space markers removed, ties on the
  way back preferring the diagonal.  It is a heuristic (it can pair tokens that
  merely look alike), but it needs nothing but the token strings.  ``dtw`` is
  a Python double loop over a numpy matrix, one edit distance per cell; here
  the cost matrix comes from rapidfuzz over *unique* token strings and the
  accumulation is one numpy min-plus scan per row, which gives the same matrix
  values (integer costs, nothing rounds).  At 2048 x 2048 that loop (copied
  into ``bench/fusellm.py`` with rapidfuzz's edit distance per cell, timed on
  512 x 512 and scaled x16) took 2.87 s and ``dtw_align`` 0.080 s, in
  ``OMP_NUM_THREADS=1 python bench/fusellm.py`` (``docs/benchmarks.md``).
* ``offsets_align`` — exact: both tokenisations of one text share character
  boundaries, so a target token and a source token with the *same span* were
  produced after reading the same prefix.  No guessing, no tie-breaking.

``match_positions`` turns either alignment into the one array fusion needs:
for every target position the source position whose distribution is used, or
``-1`` (fall back to the gold token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusekit.strategies.fusellm.vocab import SPACE_MARKERS, cdist_workers


def strip_markers(token: str) -> str:
    """DTW's normalisation: drop both space markers (``Ġ``, ``▁``).

    The released ``dist_fn`` (``others.py``, inside ``transform_step_logits``)
    drops each tokenizer's own marker only, the same thing for ordinary tokens.
    """
    for marker in SPACE_MARKERS:
        token = token.replace(marker, "")
    return token


def edit_cost_matrix(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """``cost[i, j]`` = Levenshtein distance of source string i and target string j (int32).

    Computed once per *distinct* pair of strings: texts repeat tokens a lot, so
    a 2048 x 2048 matrix typically needs a few hundred thousand distances.
    """
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    src_u, src_inv = np.unique(np.asarray(source, dtype=object).astype(str), return_inverse=True)
    tgt_u, tgt_inv = np.unique(np.asarray(target, dtype=object).astype(str), return_inverse=True)
    workers = cdist_workers(len(src_u) * len(tgt_u))
    dist = process.cdist(
        list(src_u), list(tgt_u), scorer=Levenshtein.distance, dtype=np.int32, workers=workers
    )
    return dist[src_inv.reshape(-1)][:, tgt_inv.reshape(-1)]


def dtw_accumulate(cost: np.ndarray) -> np.ndarray:
    """The DTW matrix ``D[i, j] = cost[i, j] + min(D[i-1, j], D[i, j-1], D[i-1, j-1])``.

    Row by row: with ``S`` the running sum of row ``i``'s costs and ``X = S - cost``
    (the sum strictly before ``j``), the left-to-right dependency unrolls to

        D[i, j] = S[j] + min_{k<=j} (min(D[i-1, k], D[i-1, k-1]) - X[k])

    — a cumulative minimum, so each row is four vectorised numpy calls on
    preallocated buffers; ``S`` and ``X`` are computed for all rows at once.
    Integer arithmetic keeps it exact (int32 unless the sums could overflow).
    """
    cost = np.asarray(cost)
    n, m = cost.shape
    dtype = np.int32 if int(cost.max(initial=0)) * (n + m) < 2**30 else np.int64
    cost = np.ascontiguousarray(cost, dtype=dtype)
    run = np.cumsum(cost, axis=1, dtype=dtype)
    before = run - cost
    acc = np.empty((n, m), dtype=dtype)
    acc[0] = run[0]
    buf = np.empty(m, dtype=dtype)
    minimum, running_min = np.minimum, np.minimum.accumulate
    for i in range(1, n):
        prev = acc[i - 1]
        minimum(prev[1:], prev[:-1], out=buf[1:])
        buf[0] = prev[0]
        np.subtract(buf, before[i], out=buf)
        running_min(buf, out=buf)
        np.add(buf, run[i], out=acc[i])
    return acc


def dtw_backtrack(acc: np.ndarray) -> list[list[int]]:
    """Walk back from the end preferring diagonal, then up (source), then left (target).

    Returns, for each target position, the source positions paired with it —
    ``mappings_series_2`` of the released ``dtw`` (``others.py``), whose walk
    back takes ``np.argmin([diag, up, left])``, the first of equal values; lists
    in increasing order.
    """
    n, m = acc.shape
    inf = np.iinfo(np.int64).max
    i, j = n - 1, m - 1
    mapping: list[list[int]] = [[] for _ in range(m)]
    while i > 0 or j > 0:
        mapping[j].append(i)
        diag = acc[i - 1, j - 1] if i > 0 and j > 0 else inf
        up = acc[i - 1, j] if i > 0 else inf
        left = acc[i, j - 1] if j > 0 else inf
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
    mapping[0].append(0)
    for lst in mapping:
        lst.reverse()
    return mapping


def dtw_align(source_tokens: Sequence[str], target_tokens: Sequence[str]) -> list[list[int]]:
    """For each target position, the source positions DTW pairs with it.

    The cost of a pair is the edit distance of the two strings with ``Ġ``/``▁``
    removed, as in the released ``dist_fn``, and so is the walk back (ties prefer
    the diagonal).  The released ``transform_step_logits`` passes
    ``convert_ids_to_tokens`` strings; ``prepare.dtw_strings`` passes each
    token's bytes instead (its module docstring says where the two differ).
    Empty inputs give empty lists.
    """
    if not source_tokens or not target_tokens:
        return [[] for _ in target_tokens]
    stripped = {t: strip_markers(t) for t in {*source_tokens, *target_tokens}}
    cost = edit_cost_matrix(
        [stripped[t] for t in source_tokens], [stripped[t] for t in target_tokens]
    )
    # The recurrence is symmetric, so scan along the shorter side (fewer numpy calls).
    acc = dtw_accumulate(cost.T).T if cost.shape[0] > cost.shape[1] else dtw_accumulate(cost)
    return dtw_backtrack(acc)


def _ranked_spans(spans: np.ndarray) -> np.ndarray:
    """``[start, end, rank]`` rows: ``rank`` counts earlier tokens with the very same span."""
    n = len(spans)
    order = np.lexsort((np.arange(n), spans[:, 1], spans[:, 0]))
    ordered = spans[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start
    return np.column_stack([spans, rank])


def offsets_match(source_spans: np.ndarray, target_spans: np.ndarray) -> np.ndarray:
    """Per target position the source position with exactly the same span, else ``-1``.

    ``offsets_align`` as one array, vectorised: the ``(start, end, rank)`` keys of
    both sides are sorted together, and equal keys — one per side at most — end
    up next to each other, source first.
    """
    src = np.asarray(source_spans, dtype=np.int64).reshape(-1, 2)
    tgt = np.asarray(target_spans, dtype=np.int64).reshape(-1, 2)
    out = np.full(len(tgt), -1, dtype=np.int64)
    if not len(src) or not len(tgt):
        return out
    keys = np.concatenate([_ranked_spans(src), _ranked_spans(tgt)])
    side = np.repeat([0, 1], [len(src), len(tgt)])
    pos = np.concatenate([np.arange(len(src)), np.arange(len(tgt))])
    order = np.lexsort((side, keys[:, 2], keys[:, 1], keys[:, 0]))
    keys, side, pos = keys[order], side[order], pos[order]
    hit = (keys[1:] == keys[:-1]).all(axis=1) & (side[:-1] == 0) & (side[1:] == 1)
    out[pos[1:][hit]] = pos[:-1][hit]
    return out


def offsets_align(
    source_offsets: Sequence[Sequence[int]], target_offsets: Sequence[Sequence[int]]
) -> list[list[int]]:
    """For each target position ``[s]`` if source token ``s`` covers exactly the same span, else ``[]``.

    Offsets are ``(start, end)`` pairs into the same text (bytes or characters,
    the same unit on both sides).  Several zero-width tokens (BOS, a dummy
    prefix) may share a span: they pair up in order of appearance.
    """
    hits = offsets_match(np.asarray(source_offsets), np.asarray(target_offsets))
    return [[] if s < 0 else [int(s)] for s in hits]


def match_positions(
    mapping: Sequence[Sequence[int]],
    source_ids: Sequence[int] | np.ndarray,
    target_ids: Sequence[int] | np.ndarray,
    vocab_map: np.ndarray,
    *,
    source_canon: Sequence[str | None] | None = None,
    target_canon: Sequence[str | None] | None = None,
    require_same_token: bool = True,
) -> np.ndarray:
    """Per target position the usable source position, or ``-1``.

    A position is usable when it is paired with exactly one source position
    and (``require_same_token``) the source token maps onto the target token —
    by the vocabulary map or by identical bytes.  The first pair may also differ
    only by a leading space (SentencePiece's dummy prefix), on either side; the
    released ``transform_step_logits`` (``others.py``) has a narrower form of
    this, its "special case for mpt": a GPT-NeoX or GPT-2 source's first token
    gets the target's space marker when the target's first token starts with
    one.  Offsets alignment already guarantees identical text, so it passes
    ``require_same_token=False``.
    """
    out = np.full(len(mapping), -1, dtype=np.int64)
    sizes = np.fromiter((len(m) for m in mapping), dtype=np.int64, count=len(mapping))
    tgt_pos = np.flatnonzero(sizes == 1)
    src_pos = np.fromiter(
        (mapping[t][0] for t in tgt_pos.tolist()), dtype=np.int64, count=len(tgt_pos)
    )
    if not require_same_token:
        out[tgt_pos] = src_pos
        return out
    sids = np.asarray(source_ids, dtype=np.int64)[src_pos]
    tids = np.asarray(target_ids, dtype=np.int64)[tgt_pos]
    vmap = np.asarray(vocab_map)
    inside = (sids >= 0) & (sids < len(vmap))
    same = inside & (vmap[np.where(inside, sids, 0)] == tids)
    if source_canon is not None and target_canon is not None:
        first = next((t for t, i in enumerate(target_ids) if target_canon[int(i)] is not None), -1)
        for j in np.flatnonzero(~same):  # identical bytes; the first word may differ by a space
            a, b = source_canon[int(sids[j])], target_canon[int(tids[j])]
            same[j] = a is not None and a == b
            if not same[j] and tgt_pos[j] == first and a is not None and b is not None:
                same[j] = a.lstrip(" ") == b.lstrip(" ") != ""
    out[tgt_pos[same]] = src_pos[same]
    return out

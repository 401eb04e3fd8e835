"""Minimum edit distance search, exact, without comparing every pair.

MinED maps each source token with no exact twin to the target token at the
smallest Levenshtein distance, ties to the lowest target position.  A plain
``cdist`` over the whole target vocabulary computes every pair: Gemma-3's
262k vocabulary onto SmolLM2's 49k is 1e10 pairs, a minute on two cores.

Most of those pairs cannot win.  A cheap lower bound prunes them: Levenshtein
distance is at least the *bag distance* of the two strings, and the bag
distance over a coarse alphabet (characters folded into a few classes) is at
most the bag distance over the real one, so it is a valid bound too.  With
the classes non-ASCII / ``a-m`` / ``n-z`` / other, a token of multi-byte text
is bounded far from every ASCII word, and a 3-letter word from every 9-letter
one.  The classes only bound the distance; the distance itself compares the
strings as given, case included (``A`` counts as "other" in the bound, and
``A`` and ``a`` differ by one edit).  Strings with the same class counts share
a bound, so queries and choices are grouped by those counts; each query group
searches the choice groups in order of increasing bound, window by window, and
a query is final once its best distance is below the next window's bound (a
later choice can then neither beat nor tie it).  Duplicate strings are
searched once.  The answer is the plain search's, tie-breaking included
(tested against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Upper ends of the bound windows searched in one ``cdist`` call each.
WINDOWS = (0, 1, 2, 3, 5, 8, 13, 1 << 30)
#: int32 distances one ``cdist`` call makes at most (48 MiB a worker, whatever the
#: target vocabulary's size): a call takes ``BLOCK // len(window)`` query rows.
BLOCK = 256 * 49_152
_CLASSES = 4


def _class_of(codepoints: np.ndarray) -> np.ndarray:
    lower = (codepoints >= ord("a")) & (codepoints <= ord("z"))
    return np.where(
        codepoints >= 0x80, 0, np.where(lower, np.where(codepoints <= ord("m"), 1, 2), 3)
    )


def signatures(strings: Sequence[str]) -> np.ndarray:
    """``[len(strings), 4]`` counts of each string's characters per class."""
    lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    points = np.frombuffer("".join(strings).encode("utf-32-le"), dtype=np.uint32)
    rows = np.repeat(np.arange(len(strings)), lengths)
    out = np.zeros((len(strings), _CLASSES), dtype=np.int32)
    np.add.at(out, (rows, _class_of(points)), 1)
    return out


def _bag_bound(sig: np.ndarray, others: np.ndarray) -> np.ndarray:
    diff = others - sig[None, :]
    return np.maximum(np.clip(diff, 0, None).sum(1), np.clip(-diff, 0, None).sum(1))


def _groups(sig: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Distinct signatures and, for each, its members' positions in ascending order."""
    keys, inverse = np.unique(sig, axis=0, return_inverse=True)
    order = np.argsort(inverse.reshape(-1), kind="stable")
    cuts = np.cumsum(np.bincount(inverse.reshape(-1), minlength=len(keys)))[:-1]
    return keys, np.split(order, cuts)


def nearest(
    queries: Sequence[str],
    choices: Sequence[str],
    workers: int = 1,
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """For each query, the position of the first choice at minimum Levenshtein distance.

    Equal to ``cdist(queries, choices).argmin(axis=1)``; ``workers`` threads search
    query groups side by side (rapidfuzz releases the GIL).  ``stats``, when given,
    receives ``pairs`` (distances computed) and ``groups`` (query signature groups).
    """
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    if not len(choices):
        raise ValueError("no choices to search")
    uq, q_inverse = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
    uc, c_first = np.unique(np.asarray(choices, dtype=object), return_index=True)
    # A repeated choice can only ever win at its first position: keep that one.
    c_strings = [str(s) for s in uc]
    q_keys, q_members = _groups(signatures([str(s) for s in uq]))
    c_keys, c_members = _groups(signatures(c_strings))
    c_array = np.asarray(c_strings, dtype=object)
    c_sorted = [m[np.argsort(c_first[m], kind="stable")] for m in c_members]
    best_pos = np.empty(len(uq), dtype=np.int64)
    computed = np.zeros(len(q_keys), dtype=np.int64)

    def search(group: int) -> None:
        members = q_members[group]
        texts = [str(uq[i]) for i in members]
        bound = _bag_bound(q_keys[group], c_keys)
        dist = np.full(len(members), np.iinfo(np.int64).max, dtype=np.int64)
        pos = np.full(len(members), np.iinfo(np.int64).max, dtype=np.int64)
        active = np.arange(len(members))
        low = 0
        for high in WINDOWS:
            window = np.flatnonzero((bound >= low) & (bound <= high))
            if len(window):
                ids = np.concatenate([c_sorted[g] for g in window])
                ids = ids[np.argsort(c_first[ids], kind="stable")]
                window_texts = c_array[ids].tolist()
                here = np.empty(len(active), dtype=np.int64)
                d = np.empty(len(active), dtype=np.int64)
                step = max(1, BLOCK // len(window_texts))  # bounds the int32 block's size
                for start in range(0, len(active), step):
                    rows = active[start : start + step]
                    found = process.cdist(
                        [texts[i] for i in rows], window_texts,
                        scorer=Levenshtein.distance, dtype=np.int32, workers=1,
                    )  # fmt: skip
                    first = found.argmin(axis=1)  # first minimum: the lowest position
                    here[start : start + len(rows)] = first
                    d[start : start + len(rows)] = found[np.arange(len(rows)), first]
                p = c_first[ids][here]
                computed[group] += len(active) * len(ids)
                better = (d < dist[active]) | ((d == dist[active]) & (p < pos[active]))
                dist[active[better]], pos[active[better]] = d[better], p[better]
            active = active[dist[active] > high]  # later windows are bounded above high
            low = high + 1
            if not len(active):
                break
        best_pos[members] = pos

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(search, range(len(q_keys))))
    if stats is not None:
        stats.update(pairs=int(computed.sum()), groups=len(q_keys))
    return best_pos[q_inverse.reshape(-1)]

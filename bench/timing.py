"""The one timing rule every benchmark here uses: the best of a few runs, in seconds.

The minimum, not the mean: on a shared machine, noise only ever adds time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int = 3, *, warmup: bool = False) -> float:
    """Fastest of ``repeat`` calls of ``fn``; ``warmup`` runs it once first, untimed."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best

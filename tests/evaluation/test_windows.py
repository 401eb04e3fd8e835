"""Window planning: every target scored exactly once, no window longer than the context."""

from __future__ import annotations

import pytest

from fusekit.evaluation.windows import plan_windows


@pytest.mark.parametrize("n", [1, 2, 5, 8, 9, 17, 64, 100])
@pytest.mark.parametrize("first", [0, 1, 3, 12, 40])
@pytest.mark.parametrize(("length", "stride"), [(8, None), (8, 7), (8, 3), (8, 1), (2, 1), (16, 5)])
def test_every_target_once_within_context(
    n: int, first: int, length: int, stride: int | None
) -> None:
    windows = plan_windows(n, first, length, stride)
    scored = [t for w in windows for t in range(w.score_from, w.end)]
    assert scored == list(range(max(first, 1), n))
    for w in windows:
        assert 0 <= w.begin < w.score_from <= w.end <= n
        assert w.end - w.begin <= length
    effective = length - 1 if stride is None else stride
    for w in windows[1:]:  # later windows give their first target the promised context
        assert w.score_from - w.begin >= min(length - effective, w.score_from)


def test_default_is_disjoint_windows_overlapping_by_one_token() -> None:
    windows = plan_windows(20, 1, 8)
    assert [(w.begin, w.end, w.score_from) for w in windows] == [
        (0, 8, 1),
        (7, 15, 8),
        (12, 20, 15),  # the last window keeps a full context
    ]


def test_long_unscored_context_is_cut_from_the_left() -> None:
    (window,) = plan_windows(30, 25, 8)
    assert (window.begin, window.end, window.score_from) == (22, 30, 25)


def test_nothing_to_score() -> None:
    assert plan_windows(1, 1, 8) == []
    assert plan_windows(5, 5, 8) == []


@pytest.mark.parametrize(("length", "stride"), [(1, None), (8, 8), (8, 0)])
def test_bad_window_settings(length: int, stride: int | None) -> None:
    with pytest.raises(ValueError):
        plan_windows(10, 1, length, stride)

"""Scoring never holds a whole batch's or window's full-vocabulary fp32 log-probabilities."""

from __future__ import annotations

import pytest
import torch

from fusekit.evaluation import likelihood
from fusekit.evaluation.likelihood import window_nll
from fusekit.evaluation.windows import Window


def test_chunked_log_softmax_equals_the_whole() -> None:
    logits = torch.randn(50, 300, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 300, (50,), generator=torch.Generator().manual_seed(1)).tolist()
    whole = window_nll(logits, tokens, 3, rows=10_000)
    for rows in (1, 7, 16):
        nats, n, greedy = window_nll(logits, tokens, 3, rows=rows)
        assert n == whole[1] == 47 and greedy == whole[2]
        assert nats == pytest.approx(whole[0], rel=1e-12)


def test_batches_shrink_to_the_logits_budget(monkeypatch) -> None:
    monkeypatch.setattr(likelihood, "LOGITS_BUDGET", 4 * 1000 * 100)  # 100 tokens of vocab 1000
    work = [
        (i, Window(begin=0, end=length, score_from=1))
        for i, length in enumerate([40, 30, 30, 10, 10])
    ]
    batches = likelihood._batches(work, batch_size=8, vocab=1000)
    assert [len(b) for b in batches] == [2, 3]  # 2 x 40 <= 100 < 3 x 40; then 3 x 30 <= 100
    assert [i for b in batches for i, _ in b] == [0, 1, 2, 3, 4]
    assert [len(b) for b in likelihood._batches(work, batch_size=8, vocab=1)] == [5]

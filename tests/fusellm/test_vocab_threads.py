"""The vocabulary map and the alignment honour the thread setting (never every core)."""

from __future__ import annotations

import torch

from fusekit.strategies.fusellm.vocab import cdist_workers


def test_cdist_follows_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cdist_workers(10**9) == 1
        torch.set_num_threads(2)
        assert cdist_workers(10**9) == 2
        assert cdist_workers(10) == 1  # small problems stay on one thread
    finally:
        torch.set_num_threads(before)

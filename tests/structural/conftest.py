"""Shared tiny models and outputs for the structural tests, built once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tiny import make_tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny(arch, seed=0, **overrides)`` -> a cached tiny model folder (do not modify it)."""
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("tiny")

    def build(arch: str, seed: int = 0, **kwargs: object) -> Path:
        key = (arch, seed, repr(sorted(kwargs.items())))
        if key not in cache:
            folder = root / f"{arch}-{seed}-{len(cache)}"
            cache[key] = make_tiny_model(arch, folder, seed=seed, **kwargs)  # type: ignore[arg-type]
        return cache[key]

    return build


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread than on two contended ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

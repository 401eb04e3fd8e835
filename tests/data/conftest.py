"""What the data tests share: a code tokenizer with ChatML's specials, a private cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusekit.tasks import task_tokenizer
from tests.training.test_chat import SPECIALS


@pytest.fixture(scope="module")
def tokenizer():
    tok = task_tokenizer("code", kind="bpe")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    return tok


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"

"""Tokenizers trained once for the whole tasks test package (each takes ~0.2 s)."""

from __future__ import annotations

import pytest

from fusekit.tasks.corpora import domain_documents
from fusekit.tasks.tokenizers import train_tokenizer


@pytest.fixture(scope="session")
def training_texts() -> list[str]:
    """About 200k characters of both domains: enough for a 1000-entry vocabulary."""
    return domain_documents("code", max_chars=100_000) + domain_documents(
        "english", max_chars=100_000
    )


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    """Held-out documents (never trained on) plus hand-made edge cases."""
    edge_cases = [
        "def f(x):\n\tif x:  # tab, two spaces\n        return  x\n\n\n",
        "\n\nstarts with blank lines and ends with spaces   ",
        "naïve café — “quotes” 中文 😀 ǅ\n",
        "x = {'a': [1, 2.5e-3]}  \\\n    + y",
        "    indented first line\n",
        "",
    ]
    heldout = domain_documents("code", "heldout", max_chars=30_000) + domain_documents(
        "english", "heldout", max_chars=30_000
    )
    return edge_cases + heldout


@pytest.fixture(scope="session")
def bpe(training_texts):
    return train_tokenizer("bpe", training_texts, 1000)


@pytest.fixture(scope="session")
def metaspace(training_texts):
    return train_tokenizer("metaspace", training_texts, 1000)


@pytest.fixture(scope="session")
def metaspace_prefixed(training_texts):
    return train_tokenizer("metaspace", training_texts, 1000, dummy_prefix=True)

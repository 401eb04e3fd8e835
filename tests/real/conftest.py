"""Two real pretrained checkpoints, installed from the package registry as GGUF files.

SmolLM2-135M-Instruct (Llama, 30 layers, 49,152-token byte-level BPE, tied
embeddings) and Gemma-3-270M (gemma3_text, 18 layers with sliding-window
``layer_types``, 262,144-token SentencePiece).  CI installs them
(``.ci/run``); elsewhere the tier is skipped unless they are installed, and
``FUSEKIT_REQUIRE_REAL=1`` turns that skip into a failure so CI cannot pass
without running it.  Each file is converted once per cache (``FUSEKIT_CACHE``).
"""

from __future__ import annotations

import os
import pydoc_data.topics
import textwrap
from pathlib import Path

import pytest


def _missing(why: str) -> None:
    if os.environ.get("FUSEKIT_REQUIRE_REAL") == "1":
        pytest.fail(f"the real-model tier is required but {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def gguf_files() -> dict[str, Path]:
    return gguf_paths()


def gguf_paths() -> dict[str, Path]:
    """The two GGUF files (the Gemma one joined into the cache); a missing package skips
    the test, or fails it under ``FUSEKIT_REQUIRE_REAL=1``."""
    from fusekit.io.cache import cache_root
    from fusekit.io.packaged import PackageMissing, gemma3_file, smollm2_file

    try:
        return {
            "smollm2": smollm2_file(),
            "gemma3": gemma3_file(cache_root() / "gguf-files"),
        }
    except PackageMissing as exc:
        _missing(str(exc))
        raise


@pytest.fixture(scope="session")
def real(gguf_files: dict[str, Path]) -> dict[str, Path]:
    """The converted folders (``fusekit.io.gguf.cached_folder``), keyed by model."""
    from fusekit.io.gguf import cached_folder

    return {name: cached_folder(file) for name, file in gguf_files.items()}


def english(n: int = 4, chars: int = 600) -> list[str]:
    topics = pydoc_data.topics.topics
    return [topics[k][:chars] for k in sorted(topics)[:n]]


def code(n: int = 4, chars: int = 600) -> list[str]:
    source = Path(textwrap.__file__).read_text(encoding="utf-8")
    return [source[i * chars : (i + 1) * chars] for i in range(2, 2 + n)]


def load(folder: Path):
    """Model and tokenizer, every weight copied into a fresh (64-byte aligned) buffer.

    transformers memory-maps safetensors files, so a weight's address follows its
    offset in the file (8-byte aligned), and MKL's one-token (GEMV) kernels sum in
    an order that depends on that alignment: a base and its block expansion, with
    identical weights at different file offsets, decoded 3e-5 apart on Gemma-3.
    The math is exact; the comparison must not depend on where bytes lie in a file.
    """
    from fusekit.io.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(folder)
    for param in model.parameters():
        param.data = param.data.clone()
    return model, load_tokenizer(folder)

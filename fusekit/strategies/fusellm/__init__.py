"""FuseLLM — knowledge fusion of LLMs (Wan et al., 2024, arXiv 2401.10491).

A target model is continually trained on ``λ·CLM + (1−λ)·fusion``, where the
fusion term pulls it towards a distribution fused from several *source*
models' next-token distributions on the same text — sources with any
architecture and any (fast) tokenizer.

Modules, by concept: ``vocab`` (source -> target token ids), ``align`` (DTW and
character-offset alignment), ``data`` (text chunks and encodings), ``extract``
(top-k extraction, sharded and resumable), ``fusion`` (aligned, fused sparse
targets), ``losses`` (the objective), ``batching``/``trainer`` (training) and
``strategy`` (the recipe entry point).

Names are imported lazily so that ``import fusekit.strategies.fusellm`` stays
instant (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "map_vocab": "vocab",
    "compute_vocab_map": "vocab",
    "token_table": "vocab",
    "dtw_align": "align",
    "offsets_align": "align",
    "offsets_match": "align",
    "match_positions": "align",
    "chunk_texts": "data",
    "encode_chunks": "data",
    "extract_to_store": "extract",
    "StoreReader": "extract",
    "source_outputs": "extract",
    "FusionConfig": "fusion",
    "SourceBatch": "fusion",
    "SparseTarget": "fusion",
    "fuse": "fusion",
    "fusion_loss": "losses",
    "fused_objective": "losses",
    "clm_loss": "losses",
    "FuseLLMTrainer": "trainer",
    "FuseLLMStrategy": "strategy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

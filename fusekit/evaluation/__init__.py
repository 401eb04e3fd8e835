"""The evaluation harness every strategy and the CLI share.

``evaluate(path_or_model, data, metric)`` is the one entry point; the metric
functions beneath it (``score_texts``, ``exact_match``, ``multiple_choice``,
``function_preservation``) take in-memory models and records.  Names resolve
lazily so that importing this package does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "evaluate": "fusekit.evaluation.harness",
    "load_model": "fusekit.evaluation.harness",
    "METRICS": "fusekit.evaluation.harness",
    "ScorableModel": "fusekit.evaluation.adapters",
    "as_scorable": "fusekit.evaluation.adapters",
    "score_texts": "fusekit.evaluation.text_scoring",
    "TextScore": "fusekit.evaluation.text_scoring",
    "exact_match": "fusekit.evaluation.generation",
    "greedy_generate": "fusekit.evaluation.generation",
    "multiple_choice": "fusekit.evaluation.choice",
    "function_preservation": "fusekit.evaluation.preservation",
    "max_logit_delta": "fusekit.evaluation.preservation",
    "markdown_table": "fusekit.evaluation.report",
    "terminal_table": "fusekit.evaluation.report",
    "bits_per_byte": "fusekit.evaluation.metrics",
    "perplexity": "fusekit.evaluation.metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fusekit.evaluation' has no attribute {name!r}")
    return getattr(import_module(module), name)

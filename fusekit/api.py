"""The Python API behind the CLI: ``run``, ``build``, ``plan``, ``evaluate``, ``compare``.

A face, not a room: each name is the function that does the work, in the package
that owns it — the run (``fusekit.pipeline``), evaluation, comparison, CALM's loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit.comparison.runner import compare
from fusekit.evaluation.harness import evaluate as _evaluate
from fusekit.pipeline.plan import plan
from fusekit.pipeline.run import build, run
from fusekit.strategies.calm.io import load_composed as _load

__all__ = ["build", "compare", "evaluate", "load_composed", "plan", "run"]


def evaluate(path_or_model: Any, data: Any, metric: str = "bpb", **kwargs: Any) -> dict[str, Any]:
    """Score a model folder, a CALM composition folder or an in-memory model on data."""

    return _evaluate(path_or_model, data, metric, **kwargs)


def load_composed(path: str | Path, **kwargs: Any) -> Any:
    """Re-attach a saved CALM composition to its (hash-checked) base models."""

    return _load(path, **kwargs)

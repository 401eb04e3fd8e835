"""fusekit: fuse language models (CALM, FuseLLM, block expansion, depth up-scaling).

Importing this package is cheap: nothing here imports torch or transformers;
the functions below import what they need when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fusekit.version import __version__

if TYPE_CHECKING:  # the names load the API on first use; importing fusekit stays cheap
    from pathlib import Path

    from fusekit.comparison.recipe import CompareSpec
    from fusekit.comparison.runner import ComparisonTable
    from fusekit.pipeline.run import RecipeSource
    from fusekit.recipe.common import BaseRecipe
    from fusekit.result import RunResult

__all__ = [
    "__version__",
    "build",
    "compare",
    "evaluate",
    "list_strategies",
    "load_composed",
    "load_recipe",
    "run",
]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> BaseRecipe:
    """Read and validate a YAML recipe (``--set``-style overrides optional)."""
    from fusekit.recipe import load_recipe as _load

    return _load(path, overrides)


def run(recipe: RecipeSource, **kwargs: Any) -> RunResult | None:
    """Build, train, save and describe what a recipe (path, mapping or object) asks for."""
    from fusekit.api import run as _run

    return _run(recipe, **kwargs)


def build(recipe: RecipeSource, **kwargs: Any) -> RunResult | None:
    """Like ``run`` with ``train.steps = 0``: the untrained fusion, saved."""
    from fusekit.api import build as _build

    return _build(recipe, **kwargs)


def evaluate(path_or_model: Any, data: Any, metric: str = "bpb", **kwargs: Any) -> dict[str, Any]:
    """Score a model (folder, CALM composition, or in-memory) on data with one metric."""
    from fusekit.api import evaluate as _evaluate

    return _evaluate(path_or_model, data, metric, **kwargs)


def compare(recipes: CompareSpec | str | Path, **kwargs: Any) -> ComparisonTable:
    """Run several strategies on the same data and budget; returns a ``ComparisonTable``."""
    from fusekit.comparison.runner import compare as _compare

    return _compare(recipes, **kwargs)


def load_composed(path: Any, **kwargs: Any) -> Any:
    """Load a saved CALM composition (a module with ``forward`` and ``generate``)."""
    from fusekit.api import load_composed as _load

    return _load(path, **kwargs)


def list_strategies() -> dict[str, str]:
    """Strategy tag -> one-line description."""
    from fusekit.registry import list_strategies as _list

    return _list()

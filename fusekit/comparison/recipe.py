"""The ``compare`` recipe: several runs and parents, one data budget, one table.

A compare file is not a strategy recipe; it lists runs (each a strategy recipe,
usually sharing a ``base`` of common fields) and parents (models evaluated as they
are), plus the evaluation sets every one of them is scored on.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from fusekit.errors import RecipeError
from fusekit.recipe.common import DataRef, ModelRef, Strict
from fusekit.recipe.loading import (
    apply_override,
    format_validation_error,
    load_yaml,
    parse_recipe,
    read_recipe_data,
)


class CompareRun(Strict):
    """One strategy run: a recipe mapping merged over the compare file's ``base``."""

    name: str
    recipe: dict[str, Any]


class CompareParent(Strict):
    """A model scored as it is (a parent or a baseline that needs no training)."""

    name: str
    model: ModelRef


class TradeoffChart(Strict):
    """Scatter of metric changes against a reference (e.g. forgetting vs gain)."""

    reference: str = Field(description="name of the parent or run the deltas are taken from")
    x: str = Field(description="eval-set label on the x axis (e.g. the old domain)")
    y: str = Field(description="eval-set label on the y axis (e.g. the new domain)")


class CompareSpec(Strict):
    """``fusekit compare FILE``: what to run, what to score it on, where to write results."""

    name: str
    description: str | None = None
    output: str = Field(description="results folder: runs, table, JSON, chart")
    base: dict[str, Any] = Field(default_factory=dict)
    parents: list[CompareParent] = Field(default_factory=list)
    runs: list[CompareRun] = Field(default_factory=list)
    eval: list[DataRef] = Field(min_length=1)
    tradeoff: TradeoffChart | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> CompareSpec:
        names = [p.name for p in self.parents] + [r.name for r in self.runs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"names must be unique; repeated: {', '.join(dupes)}")
        if not names:
            raise ValueError("list at least one run or parent")
        return self


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; nested mappings merge, everything else is replaced.

    A ``null`` in ``over`` removes the key, so a run can drop a base field that its
    strategy does not take (``target: null`` for a finetune run over a FuseLLM base).
    """
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_compare(path: str | Path, overrides: list[str] | None = None) -> CompareSpec:
    """Read and validate a compare file; every run's recipe is validated too."""
    data = read_recipe_data(path)
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        spec = CompareSpec.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, str(path))) from None
    problems: list[str] = []
    for i, run in enumerate(spec.runs):
        try:
            parse_recipe(
                deep_merge(spec.base, run.recipe), source=f"{path}: runs[{i}] ({run.name})"
            )
        except RecipeError as exc:
            problems.extend(exc.lines())
    if problems:
        raise RecipeError(problems)
    return spec


def is_compare_file(path: str | Path) -> bool:
    """A YAML file with ``runs:`` or ``parents:`` and no ``strategy:`` is a compare file."""
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the recipe reader names the problem
    return (
        isinstance(data, dict) and "strategy" not in data and ("runs" in data or "parents" in data)
    )

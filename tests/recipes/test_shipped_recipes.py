"""Every recipe and compare file shipped in recipes/ validates (recipes/real: in the real tier)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusekit.comparison.recipe import is_compare_file, load_compare
from fusekit.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2] / "recipes"
# recipes/real name the folders recipes/real/models.py converts from the GGUF packages
# (models/, not in a clone); the real-model tier plans them on those folders
# (tests/real/test_real_recipes.py).
RECIPES = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name != "real")


def test_there_are_recipes() -> None:
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path: Path) -> None:
    if is_compare_file(path):
        assert load_compare(path).runs or load_compare(path).parents
    else:
        assert load_recipe(path).strategy

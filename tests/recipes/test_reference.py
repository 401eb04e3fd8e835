"""docs/recipes.md and docs/recipe.schema.json are generated; they must be current."""

from __future__ import annotations

import json
from pathlib import Path

from fusekit.recipe.loading import json_schema
from fusekit.recipe.reference import render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_recipe_reference_is_current() -> None:
    assert (DOCS / "recipes.md").read_text() == render_markdown(), (
        "regenerate with: python -m fusekit.recipe.reference docs"
    )


def test_schema_is_current() -> None:
    assert json.loads((DOCS / "recipe.schema.json").read_text()) == json.loads(
        json.dumps(json_schema())
    )

"""Recipes: YAML files validated by pydantic, one model per strategy.

The shared pieces (model references, data, the train spec) live here; each
strategy's own model lives beside it (``fusekit/strategies/<tag>/recipe.py``) and is
found through the registry (``fusekit.registry.recipe_model``), so this package
names no strategy.  See ``docs/recipes.md`` for every field.
"""

from fusekit.recipe.common import (
    DataSpec,
    FileData,
    LocalModel,
    ScratchModel,
    ScratchSpec,
    TaskData,
    TrainSpec,
    data_label,
    parse_size,
)
from fusekit.recipe.loading import (
    apply_override,
    json_schema,
    load_recipe,
    parse_recipe,
    read_recipe_data,
    recipe_to_dict,
)

__all__ = [
    "DataSpec",
    "FileData",
    "LocalModel",
    "ScratchModel",
    "ScratchSpec",
    "TaskData",
    "TrainSpec",
    "apply_override",
    "data_label",
    "json_schema",
    "load_recipe",
    "parse_recipe",
    "parse_size",
    "read_recipe_data",
    "recipe_to_dict",
]

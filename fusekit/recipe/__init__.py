"""Recipes: YAML files validated by pydantic, one model per strategy.

See ``docs/recipes.md`` for every field.
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
from fusekit.recipe.strategies import (
    STRATEGY_RECIPES,
    BlockExpansionRecipe,
    CalmRecipe,
    DepthUpscalingRecipe,
    FinetuneRecipe,
    FuseLLMRecipe,
    LoraSpec,
    Recipe,
)

__all__ = [
    "STRATEGY_RECIPES",
    "BlockExpansionRecipe",
    "CalmRecipe",
    "DataSpec",
    "DepthUpscalingRecipe",
    "FileData",
    "FinetuneRecipe",
    "FuseLLMRecipe",
    "LocalModel",
    "LoraSpec",
    "Recipe",
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

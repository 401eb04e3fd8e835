"""Recipes: YAML files validated by pydantic, one model per strategy.

The shared pieces (model references, data, the train spec) live here; each
strategy's own model lives beside it (``fusekit/strategies/<tag>/recipe.py``) and
is re-exported here lazily (each of those modules imports this package's
``common``, so importing them eagerly here would be circular).  See ``docs/recipes.md`` for every field.
"""

from typing import Any

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
    "BlockExpansionRecipe",
    "CalmRecipe",
    "DataSpec",
    "DepthUpscalingRecipe",
    "FileData",
    "FinetuneRecipe",
    "FuseLLMRecipe",
    "LocalModel",
    "LoraSpec",
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

_STRATEGY_MODELS = {
    "BlockExpansionRecipe": "block_expansion",
    "CalmRecipe": "calm",
    "DepthUpscalingRecipe": "depth_upscaling",
    "FinetuneRecipe": "finetune",
    "LoraSpec": "finetune",
    "FuseLLMRecipe": "fusellm",
}


def __getattr__(name: str) -> Any:
    if name in _STRATEGY_MODELS:
        import importlib

        module = importlib.import_module(f"fusekit.strategies.{_STRATEGY_MODELS[name]}.recipe")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

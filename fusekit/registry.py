"""Strategy tags -> their stages and recipe model, resolved lazily.

Each entry names ``"module:Class"`` strings, so that listing strategies (``fusekit
strategies``, ``fusekit --help``) never imports torch or transformers.  A strategy
owns its recipe model (``strategies/<tag>/recipe.py``, with ``strategy:
Literal["<tag>"]``); recipe parsing, the JSON schema and ``fusekit fuse`` read the
registry, so adding one touches no other module.

Strategies outside fusekit register themselves through the ``fusekit.strategies``
entry-point group: the entry point names a function that calls
``register_strategy`` (keep its module light — it is imported whenever the registry
is first read).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from fusekit.errors import FusekitError, NotImplementedStrategyError

ENTRY_POINT_GROUP = "fusekit.strategies"
_TAG = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class StrategyEntry:
    """Where a strategy's stages and recipe model live, and what it does in one line."""

    strategy: str
    recipe: str
    description: str = ""


_STRATEGIES: dict[str, StrategyEntry] = {
    "calm": StrategyEntry(
        "fusekit.strategies.calm.strategy:CalmStrategy",
        "fusekit.strategies.calm.recipe:CalmRecipe",
        "CALM: learn cross-attention from frozen augmenting models into a frozen anchor",
    ),
    "fusellm": StrategyEntry(
        "fusekit.strategies.fusellm.strategy:FuseLLMStrategy",
        "fusekit.strategies.fusellm.recipe:FuseLLMRecipe",
        "FuseLLM: continually train a target on fused source distributions",
    ),
    "block_expansion": StrategyEntry(
        "fusekit.strategies.block_expansion.strategy:BlockExpansionStrategy",
        "fusekit.strategies.block_expansion.recipe:BlockExpansionRecipe",
        "LLaMA Pro: insert identity copies of blocks and train only those",
    ),
    "depth_upscaling": StrategyEntry(
        "fusekit.strategies.depth_upscaling.strategy:DepthUpscalingStrategy",
        "fusekit.strategies.depth_upscaling.recipe:DepthUpscalingRecipe",
        "SOLAR: splice two trimmed copies of a model into a deeper one",
    ),
    "finetune": StrategyEntry(
        "fusekit.strategies.finetune.strategy:FinetuneStrategy",
        "fusekit.strategies.finetune.recipe:FinetuneRecipe",
        "baseline: plain continued training of one model (full or LoRA)",
    ),
}
_plugins_loaded = False


def _load_plugins() -> None:
    """Run the registration function of every installed ``fusekit.strategies`` entry point."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register = point.load()
        except Exception as exc:  # a broken plugin must not take the built-in strategies down
            raise FusekitError(
                f"strategy plugin {point.name!r} ({point.value}) cannot be loaded: {exc}"
            ) from None
        register()


def _entries() -> dict[str, StrategyEntry]:
    _load_plugins()
    return _STRATEGIES


def canonical_tag(tag: str) -> str:
    """Accept the CLI's hyphenated spellings (``block-expansion``) as well as the tags."""
    norm = tag.strip().lower().replace("-", "_")
    if norm not in _entries():
        known = ", ".join(sorted(_entries()))
        raise FusekitError(f"unknown strategy {tag!r}; choose one of: {known}")
    return norm


def list_strategies() -> dict[str, str]:
    """Tag -> one-line description, in a stable order."""
    return {tag: entry.description for tag, entry in _entries().items()}


def register_strategy(tag: str, target: str, description: str = "", *, recipe: str) -> None:
    """Add (or replace) a strategy.

    ``target`` is ``"package.module:Class"`` (a ``fusekit.strategies.base.Strategy``),
    ``recipe`` the ``"package.module:Model"`` of its recipe, a ``BaseRecipe`` subclass
    whose ``strategy`` field is ``Literal[tag]``.
    """
    if not _TAG.match(tag):
        raise ValueError(f"strategy tag {tag!r} must be lowercase letters, digits and '_'")
    for name, value in (("target", target), ("recipe", recipe)):
        if ":" not in value:
            raise ValueError(f"{name} must look like 'package.module:Name', got {value!r}")
    _STRATEGIES[tag] = StrategyEntry(target, recipe, description)


def _import(tag: str, target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotImplementedStrategyError(
                f"strategy {tag!r} is not implemented yet in this version of fusekit"
            ) from None
        raise
    return getattr(module, attr)


def strategy_class(tag: str) -> Any:
    """Import and return the stages class behind ``tag``."""
    tag = canonical_tag(tag)
    return _import(tag, _entries()[tag].strategy)


def recipe_model(tag: str) -> Any:
    """Import and return the recipe model of ``tag``, checking that it names that tag."""
    tag = canonical_tag(tag)
    model = _import(tag, _entries()[tag].recipe)
    field = getattr(model, "model_fields", {}).get("strategy")
    if field is None or getattr(field.annotation, "__args__", None) != (tag,):
        raise FusekitError(
            f"the recipe model of strategy {tag!r} must declare strategy: Literal[{tag!r}]"
        )
    return model


def recipe_union() -> Any:
    """Every registered recipe model as one union discriminated on ``strategy`` (for schemas)."""
    from typing import Annotated, Union

    from pydantic import Field

    models = tuple(recipe_model(tag) for tag in _entries())
    return Annotated[Union[models], Field(discriminator="strategy")]  # noqa: UP007

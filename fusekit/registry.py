"""Strategy tags -> everything fusekit needs to know about a strategy, resolved lazily.

An entry names ``"module:Name"`` strings, so that listing strategies (``fusekit
strategies``, ``fusekit --help``) never imports torch or transformers.  A strategy
describes itself here completely: its stages, its recipe model (``strategy:
Literal["<tag>"]``) and the parts of it the recipe reference documents, the options
``fusekit fuse`` takes for it and how they become a recipe, and how to load an
output folder it wrote that is not a plain model folder.  Recipe parsing, the JSON
schema, the recipe reference, ``fusekit fuse`` and evaluation read this table, so a
strategy is its own package plus one entry.

Strategies outside fusekit register themselves through the ``fusekit.strategies``
entry-point group: the entry point names a function that calls
``register_strategy`` (keep its module light — it is imported whenever the registry
is first read).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field

from fusekit.errors import FusekitError, NotImplementedStrategyError

ENTRY_POINT_GROUP = "fusekit.strategies"
_TAG = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Option:
    """One ``fusekit fuse`` option of a strategy: ``--flag VALUE`` sets a recipe field.

    ``name`` is the option's Python name (and, unless ``field`` says otherwise, the
    recipe field it sets); ``type`` is str, int or float; ``many`` makes it
    repeatable (``--source A --source B`` -> a list); ``model`` says its values name
    models, so ``--allow-pickle`` and ``--trust-remote-code`` apply to them.
    """

    name: str
    help: str
    type: type = str
    many: bool = False
    model: bool = False
    flag: str = ""
    field: str = ""

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def recipe_field(self) -> str:
        return self.field or self.name


@dataclass(frozen=True)
class StrategyEntry:
    """What a strategy is, in strings fusekit imports only when it needs them.

    ``strategy`` and ``recipe`` are the ``"module:Class"`` of its stages and recipe
    model; ``options`` its ``fusekit fuse`` options and ``from_options`` the
    ``"module:function"`` turning them into a recipe mapping (default: each given
    option sets its field, and ``--data``/``--steps`` make a ``train:``);
    ``reference`` the ``(heading, "module:Model")`` parts of its recipe the reference
    documents besides the recipe model; ``output_marker`` a file only its outputs
    hold and ``output_loader`` the ``"module:function(folder, **kwargs)"`` that loads
    such a folder for evaluation.
    """

    strategy: str
    recipe: str
    description: str = ""
    options: tuple[Option, ...] = ()
    from_options: str = ""
    reference: tuple[tuple[str, str], ...] = ()
    output_marker: str = ""
    output_loader: str = ""


_MODEL = Option("model", "model folder", model=True)
_STRATEGIES: dict[str, StrategyEntry] = {
    "calm": StrategyEntry(
        "fusekit.strategies.calm.strategy:CalmStrategy",
        "fusekit.strategies.calm.recipe:CalmRecipe",
        "CALM: learn cross-attention from frozen augmenting models into a frozen anchor",
        options=(
            Option("anchor", "anchor model folder", model=True),
            Option(
                "augment", "augmenting model folder (repeat for several)", many=True, model=True
            ),
            Option("every", "pair every k-th layer", type=int),
        ),
        from_options="fusekit.strategies.calm.recipe:from_options",
        output_marker="composition.json",
        output_loader="fusekit.strategies.calm.io:load_composed",
    ),
    "fusellm": StrategyEntry(
        "fusekit.strategies.fusellm.strategy:FuseLLMStrategy",
        "fusekit.strategies.fusellm.recipe:FuseLLMRecipe",
        "FuseLLM: continually train a target on fused source distributions",
        options=(
            Option("target", "target model folder", model=True),
            Option(
                "source",
                "source model folder (repeat for several)",
                many=True,
                model=True,
                field="sources",
            ),
            Option("lam", "weight of the CLM loss", type=float, flag="--lambda", field="lambda"),
            Option("fusion", "mince | avgce"),
            Option("align", "mined | em | offsets"),
        ),
        from_options="fusekit.strategies.fusellm.recipe:from_options",
    ),
    "block_expansion": StrategyEntry(
        "fusekit.strategies.block_expansion.strategy:BlockExpansionStrategy",
        "fusekit.strategies.block_expansion.recipe:BlockExpansionRecipe",
        "LLaMA Pro: insert identity copies of blocks and train only those",
        options=(
            _MODEL,
            Option("groups", "N groups", type=int),
            Option("blocks_per_group", "P layers per group", type=int),
        ),
        from_options="fusekit.strategies.block_expansion.recipe:from_options",
    ),
    "depth_upscaling": StrategyEntry(
        "fusekit.strategies.depth_upscaling.strategy:DepthUpscalingStrategy",
        "fusekit.strategies.depth_upscaling.recipe:DepthUpscalingRecipe",
        "SOLAR: splice two trimmed copies of a model into a deeper one",
        options=(
            _MODEL,
            Option("remove", "SOLAR's m: layers removed from each copy", type=int),
            Option("slices", "layer ranges, e.g. 0:24,8:32"),
        ),
        from_options="fusekit.strategies.depth_upscaling.recipe:from_options",
        reference=(
            ("slices[i] (Slice)", "fusekit.strategies.depth_upscaling.recipe:Slice"),
            (
                "slices[i].sources[j] (SliceSource)",
                "fusekit.strategies.depth_upscaling.recipe:SliceSource",
            ),
        ),
    ),
    "finetune": StrategyEntry(
        "fusekit.strategies.finetune.strategy:FinetuneStrategy",
        "fusekit.strategies.finetune.recipe:FinetuneRecipe",
        "baseline: plain continued training of one model (full or LoRA)",
        reference=(("lora (LoraSpec)", "fusekit.strategies.finetune.recipe:LoraSpec"),),
    ),
}
_plugins_loaded = False


def _load_plugins() -> None:
    """Run the registration function of every installed ``fusekit.strategies`` entry point."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register = point.load()
        except Exception as exc:  # a broken plugin must not take the built-in strategies down
            raise FusekitError(
                f"strategy plugin {point.name!r} ({point.value}) cannot be loaded: {exc}"
            ) from None
        register()


def entries() -> dict[str, StrategyEntry]:
    """Every registered strategy (built-in, then plugins), by tag."""
    _load_plugins()
    return _STRATEGIES


def canonical_tag(tag: str) -> str:
    """Accept the CLI's hyphenated spellings (``block-expansion``) as well as the tags."""
    norm = tag.strip().lower().replace("-", "_")
    if norm not in entries():
        known = ", ".join(sorted(entries()))
        raise FusekitError(f"unknown strategy {tag!r}; choose one of: {known}")
    return norm


def list_strategies() -> dict[str, str]:
    """Tag -> one-line description, in a stable order."""
    return {tag: entry.description for tag, entry in entries().items()}


def register_strategy(
    tag: str,
    target: str,
    description: str = "",
    *,
    recipe: str,
    options: tuple[Option, ...] = (),
    from_options: str = "",
    reference: tuple[tuple[str, str], ...] = (),
    output_marker: str = "",
    output_loader: str = "",
) -> None:
    """Add (or replace) a strategy; the fields are ``StrategyEntry``'s.

    ``target`` is ``"package.module:Class"`` (a ``fusekit.strategies.base.Strategy``),
    ``recipe`` the ``"package.module:Model"`` of its recipe, a ``BaseRecipe`` subclass
    whose ``strategy`` field is ``Literal[tag]``.
    """
    if not _TAG.match(tag):
        raise ValueError(f"strategy tag {tag!r} must be lowercase letters, digits and '_'")
    named = [("target", target), ("recipe", recipe), ("from_options", from_options),
             ("output_loader", output_loader), *((h, m) for h, m in reference)]  # fmt: skip
    for name, value in named:
        if value and ":" not in value:
            raise ValueError(f"{name} must look like 'package.module:Name', got {value!r}")
    if bool(output_marker) != bool(output_loader):
        raise ValueError("output_marker and output_loader go together")
    _STRATEGIES[tag] = StrategyEntry(
        target, recipe, description, tuple(options), from_options, tuple(reference),
        output_marker, output_loader,
    )  # fmt: skip


def load_target(tag: str, target: str) -> Any:
    """The object a ``\"module:Name\"`` string of ``tag``'s entry names."""
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
    return load_target(tag, entries()[tag].strategy)


def recipe_model(tag: str) -> Any:
    """Import and return the recipe model of ``tag``, checking that it names that tag."""
    tag = canonical_tag(tag)
    model = load_target(tag, entries()[tag].recipe)
    field = getattr(model, "model_fields", {}).get("strategy")
    if field is None or getattr(field.annotation, "__args__", None) != (tag,):
        raise FusekitError(
            f"the recipe model of strategy {tag!r} must declare strategy: Literal[{tag!r}]"
        )
    return model


def recipe_union() -> Any:
    """Every registered recipe model as one union discriminated on ``strategy`` (for schemas)."""
    models = tuple(recipe_model(tag) for tag in entries())
    return Annotated[Union[models], Field(discriminator="strategy")]  # noqa: UP007


def output_loader(folder: Path) -> Callable[..., Any] | None:
    """The loader of a strategy whose outputs ``folder`` looks like (its marker file), or None."""
    for tag, entry in entries().items():
        if entry.output_marker and (folder / entry.output_marker).is_file():
            return load_target(tag, entry.output_loader)
    return None

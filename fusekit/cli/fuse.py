"""``fusekit fuse --strategy TAG …``: a recipe written from command-line options.

The options every strategy shares are this command's own; each strategy's options
come from its registry entry (``fusekit.registry.Option``), so a strategy registered
from outside fusekit gets its flags here too.  The strategy's ``from_options``
turns what was given into a recipe mapping, which is then parsed like a file.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import GenericAlias
from typing import Any

import typer

from fusekit import api
from fusekit.cli.app import app, check_json_flag, user_errors
from fusekit.cli.recipes import print_summary, show_plan
from fusekit.errors import FusekitError
from fusekit.recipe import parse_recipe
from fusekit.recipe.options import given, plain_recipe
from fusekit.registry import Option, canonical_tag, entries, load_target


def _strategy_options() -> dict[str, tuple[Option, list[str]]]:
    """Every registered option by name, with the tags that take it (first declaration wins)."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for tag, entry in entries().items():
        for option in entry.options:
            found.setdefault(option.name, (option, []))[1].append(tag)
    return found


def build_recipe(strategy: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The recipe mapping that ``fusekit fuse`` options stand for."""
    tag = canonical_tag(strategy)
    entry = entries()[tag]
    own = {o.name for o in entry.options}
    stray = [
        o for name, (o, _) in _strategy_options().items() if name not in own and given(opts, name)
    ]
    if stray:
        flags = ", ".join(sorted(o.cli_flag for o in stray))
        raise FusekitError(f"{flags} do(es) not apply to --strategy {tag}")
    if entry.from_options:
        recipe: dict[str, Any] = load_target(tag, entry.from_options)(opts)
        return recipe
    return plain_recipe(tag, opts, {o.name: o.recipe_field for o in entry.options})


def _set_loading(recipe: dict[str, Any], fields: list[str], **options: bool) -> None:
    """Apply ``--allow-pickle`` / ``--trust-remote-code`` to every model the options name."""

    def local(ref: Any) -> Any:
        return {"path": ref, **options} if isinstance(ref, str) else ref

    for key in fields:
        value = recipe.get(key)
        if isinstance(value, list):
            recipe[key] = [local(v) for v in value]
        elif value is not None:
            recipe[key] = local(value)


def fuse(
    strategy: str = typer.Option(..., "--strategy", help="calm | fusellm | block_expansion | …"),
    output: Path | None = typer.Option(None, "-o", "--output", help="output folder"),
    data: str | None = typer.Option(None, "--data", help="training data file"),
    steps: int | None = typer.Option(None, "--steps", help="0 saves the untrained result"),
    lr: float | None = typer.Option(None, "--lr"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    seed: int | None = typer.Option(None, "--seed"),
    set_: list[str] = typer.Option([], "--set", help="override: key.path=value"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, write nothing"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: the plan as JSON"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    resume: bool = typer.Option(
        False, "--resume", help="continue from the checkpoints an interrupted run left"
    ),
    accelerate_config: Path | None = typer.Option(
        None, "--accelerate-config", help="train under `accelerate launch` with this config"
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="load pickled (.bin) weights: runs code from the file"
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="run model code shipped in the model folders"
    ),
    **strategy_options: Any,
) -> None:
    """Fuse models from command-line options, without a recipe file."""
    opts = {**locals(), **strategy_options}
    data_dict = build_recipe(strategy, opts)
    if allow_pickle or trust_remote_code:
        models = [o.recipe_field for o in entries()[canonical_tag(strategy)].options if o.model]
        loading = {"allow_pickle": allow_pickle, "trust_remote_code": trust_remote_code}
        _set_loading(data_dict, models, **loading)
    recipe = parse_recipe(data_dict, source="fusekit fuse", overrides=list(set_))
    check_json_flag(as_json, dry_run, "a run's record is OUT/fusekit.json")
    if dry_run:
        show_plan(api.plan(recipe, accelerate_config=accelerate_config), as_json)
        return
    print_summary(
        api.run(
            recipe,
            output=output,
            overwrite=overwrite or None,
            resume=resume or None,
            accelerate_config=accelerate_config,
        )
    )


def _with_strategy_options(command: Any) -> Any:
    """``command`` with one keyword parameter per registered strategy option (typer reads
    the signature), so ``fusekit fuse --help`` lists every strategy's flags."""
    signature = inspect.signature(command)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    annotations = {p.name: p.annotation for p in fixed}
    extra = []
    for name, (option, tags) in _strategy_options().items():
        # GenericAlias: list[option.type], which mypy would read as a type expression
        annotation: Any = GenericAlias(list, option.type) if option.many else option.type | None
        default = typer.Option([] if option.many else None, option.cli_flag,
                               help=f"{', '.join(tags)}: {option.help}")  # fmt: skip
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                       annotation=annotation))  # fmt: skip
        annotations[name] = annotation
    command.__signature__ = signature.replace(parameters=[*fixed, *extra])
    command.__annotations__ = {**annotations, "return": None}
    return command


app.command(name="fuse")(user_errors(_with_strategy_options(fuse)))

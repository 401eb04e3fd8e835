"""``fusekit strategies``, ``fusekit validate``, ``fusekit run``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from fusekit import api
from fusekit.cli.app import app, check_json_flag, fail, user_errors
from fusekit.cli.plan_view import render_plan
from fusekit.comparison.recipe import is_compare_file, load_compare
from fusekit.errors import FusekitError
from fusekit.evaluation.report import terminal_table
from fusekit.pipeline.checks import checked
from fusekit.recipe import load_recipe
from fusekit.registry import list_strategies


@app.command()
def strategies() -> None:
    """List the strategy tags and what each does."""

    for tag, desc in list_strategies().items():
        typer.echo(f"{tag:<16} {desc}")


@app.command()
@user_errors
def validate(
    recipes: list[Path] = typer.Argument(..., help="recipe YAML files"),
    set_: list[str] = typer.Option([], "--set", help="override: key.path=value"),
) -> None:
    """Check recipes, the folders and data they name and the plan they make (layer
    ranges, pairs), without running them: one line per problem, exit 2 if any."""

    problems: list[str] = []
    for path in recipes:
        try:
            if is_compare_file(path):
                spec = load_compare(path, set_)
                kind = f"compare: {len(spec.runs)} runs, {len(spec.parents)} parents"
            else:
                recipe, strategy = checked(load_recipe(path, set_))
                strategy.plan()  # what --dry-run checks: layer ranges, pairs, shapes
                kind = recipe.strategy
        except FusekitError as exc:
            problems.extend(exc.lines())
        else:
            typer.echo(f"ok: {path} ({kind})")
    if problems:
        raise fail(problems)


@app.command()
@user_errors
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML file"),
    output: Path | None = typer.Option(None, "-o", "--output", help="output folder"),
    set_: list[str] = typer.Option([], "--set", help="override: key.path=value"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, write nothing"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: the plan as JSON"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output"),
    accelerate_config: Path | None = typer.Option(
        None, "--accelerate-config", help="train under `accelerate launch` with this config"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="continue from the checkpoints an interrupted run left"
    ),
) -> None:
    """Run a recipe: build, train, save, describe."""

    overrides = list(set_)
    check_json_flag(as_json, dry_run, "a run's record is OUT/fusekit.json")
    if dry_run:
        show_plan(api.plan(recipe, overrides, accelerate_config), as_json)
        return
    result = api.run(
        recipe,
        output=output,
        overwrite=overwrite or None,
        overrides=overrides,
        accelerate_config=accelerate_config,
        resume=resume or None,
    )
    print_summary(result)


def show_plan(plan: dict[str, Any], as_json: bool) -> None:
    """``--dry-run``: the readable plan, or with ``--json`` the whole plan for machines."""

    typer.echo(json.dumps(plan, indent=2) if as_json else render_plan(plan))


def print_summary(result: Any) -> None:
    """The run's headline figures on stdout; everything else is in ``fusekit.json``.

    None on a machine other than the first of a multi-machine run, which writes no
    output: nothing to show.
    """
    if result is None:
        return
    rows: list[tuple[str, Any]] = [("output", result.output), ("strategy", result.strategy)]
    rows += [(k, v) for k, v in result.details.items() if isinstance(v, (int, float, str, bool))]
    training = result.training
    if training is not None and training.trained:
        rows += [("steps", training.steps), ("final_loss", round(training.final_loss or 0.0, 4))]
        if training.resumed_from_step is not None:
            rows.append(("resumed_from_step", training.resumed_from_step))
        if training.skipped_nonfinite_steps:
            rows.append(("skipped_nonfinite_steps", training.skipped_nonfinite_steps))
        if training.world_size > 1:
            rows.append(("world_size", training.world_size))
    rows.append(("seconds", result.seconds))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
    if result.tables:
        sys.stdout.write(result.tables + "\n")
    elif result.evaluation:
        typer.echo(terminal_table(result.evaluation))

"""``fusekit strategies``, ``fusekit validate``, ``fusekit run``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from fusekit.cli.app import app, fail, user_errors
from fusekit.errors import FusekitError


@app.command()
def strategies() -> None:
    """List the strategy tags and what each does."""
    from fusekit.registry import list_strategies

    for tag, desc in list_strategies().items():
        typer.echo(f"{tag:<16} {desc}")


@app.command()
def validate(
    recipes: list[Path] = typer.Argument(..., help="recipe YAML files"),
    set_: list[str] = typer.Option([], "--set", help="override: key.path=value"),
) -> None:
    """Check recipes without running them: one line per problem, exit 2 if any."""
    from fusekit.compare_recipe import is_compare_file, load_compare
    from fusekit.recipe import load_recipe

    problems: list[str] = []
    for path in recipes:
        try:
            if is_compare_file(path):
                spec = load_compare(path, set_)
                kind = f"compare: {len(spec.runs)} runs, {len(spec.parents)} parents"
            else:
                kind = load_recipe(path, set_).strategy
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
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output"),
    accelerate_config: Path | None = typer.Option(
        None, "--accelerate-config", help="train under `accelerate launch` with this config"
    ),
    resume: bool = typer.Option(False, "--resume", help="resume training from checkpoints"),
) -> None:
    """Run a recipe: build, train, save, describe."""
    from fusekit import api

    overrides = list(set_) + (["train.resume=true"] if resume else [])
    if dry_run:
        typer.echo(json.dumps(api.plan(recipe, overrides), indent=2))
        return
    summary = api.run(
        recipe,
        output=output,
        overwrite=overwrite or None,
        overrides=overrides,
        accelerate_config=accelerate_config,
    )
    print_summary(summary)


def print_summary(summary: dict) -> None:
    """Scalars as a small table on stdout; the full summary is in fusekit.json."""
    rows = [
        (k, v)
        for k, v in summary.items()
        if isinstance(v, (int, float, str, bool)) and k != "tables"
    ]
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")
    tables = summary.get("tables")
    if isinstance(tables, str):
        sys.stdout.write(tables + "\n")
    if summary.get("evaluation") and not isinstance(tables, str):
        from fusekit.evaluation.report import terminal_table

        typer.echo(terminal_table(summary["evaluation"]))

"""``fusekit compare``: run several strategies and baselines, print one table."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fusekit.cli.app import app, check_json_flag, user_errors
from fusekit.cli.plan_view import render_compare_plan
from fusekit.comparison.runner import compare, plan_compare


@app.command("compare")
@user_errors
def compare_(
    spec: Path = typer.Argument(..., help="compare file (runs, parents, eval sets)"),
    set_: list[str] = typer.Option([], "--set", help="override: key.path=value"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every run's plan, write nothing"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: the plans as JSON"),
) -> None:
    """Run what is not cached, score everything on the same sets, write table/JSON/chart."""

    check_json_flag(as_json, dry_run, "the results are OUTPUT/results.json")
    if dry_run:
        plan = plan_compare(spec, overrides=list(set_))
        typer.echo(json.dumps(plan, indent=2) if as_json else render_compare_plan(plan))
        return
    table = compare(spec, overrides=list(set_))
    typer.echo(table.to_markdown())

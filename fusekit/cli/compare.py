"""``fusekit compare``: run several strategies and baselines, print one table."""

from __future__ import annotations

from pathlib import Path

import typer

from fusekit.cli.app import app, user_errors


@app.command("compare")
@user_errors
def compare_(
    spec: Path = typer.Argument(..., help="compare file (runs, parents, eval sets)"),
    set_: list[str] = typer.Option([], "--set", help="override: key.path=value"),
) -> None:
    """Run what is not cached, score everything on the same sets, write table/JSON/chart."""
    from fusekit.comparison.runner import compare

    table = compare(spec, overrides=list(set_))
    typer.echo(table.to_markdown())

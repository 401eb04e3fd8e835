"""The ``fusekit`` command line (typer). Importing it never imports torch."""

from __future__ import annotations

from fusekit.cli import compare, evaluate, fuse, recipes  # noqa: F401  (registers the commands)
from fusekit.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]

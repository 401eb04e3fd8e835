"""The typer app and the error boundary every command shares.

Commands import torch-heavy modules inside their bodies, so ``fusekit --help``
and ``fusekit strategies`` stay instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from fusekit.errors import FusekitError

app = typer.Typer(
    name="fusekit",
    help="Fuse language models: CALM, FuseLLM, block expansion, depth up-scaling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def fail(lines: list[str]) -> typer.Exit:
    """Print ``fusekit: error: …`` lines and return the exit to raise (status 2)."""
    for line in lines:
        print(f"fusekit: error: {line}", file=sys.stderr)
    return typer.Exit(2)


def user_errors(func: F) -> F:
    """Turn ``FusekitError`` into one line per problem and exit status 2, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FusekitError as exc:
            raise fail(exc.lines()) from None
        except KeyboardInterrupt:
            print("fusekit: interrupted; nothing was written", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]

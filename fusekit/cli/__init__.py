"""The ``fusekit`` command line (typer). Importing it never imports torch."""

from __future__ import annotations

from fusekit.cli import compare, convert, evaluate, fuse, recipes  # noqa: F401  (registers the commands)
from fusekit.cli.app import app, interrupted, terminate_as_interrupt


def main() -> None:
    """Console-script entry point.

    Usage mistakes (a missing argument, an unknown option) are one
    ``fusekit: error: …`` line and exit 2 like every other user error, instead of
    the framed box typer prints; ``--help`` and a bare ``fusekit`` still show help.
    """
    import sys

    from typer.main import get_command

    command = get_command(app)
    try:
        with terminate_as_interrupt():
            code = command.main(prog_name="fusekit", standalone_mode=False)
    except Exception as exc:
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "NoArgsIsHelpError" in names:
            exc.show()  # type: ignore[attr-defined]
            sys.exit(0)
        if "UsageError" not in names:
            _report_bug()
            sys.exit(1)
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path} --help" if ctx is not None else "fusekit --help"
        print(f"fusekit: error: {exc.format_message()} (see {where})", file=sys.stderr)  # type: ignore[attr-defined]
        sys.exit(2)
    except KeyboardInterrupt as exc:
        sys.exit(interrupted(exc))
    sys.exit(code if isinstance(code, int) else 0)


def _report_bug() -> None:
    """A fault of fusekit (never the user's input): the traceback and where to report it."""
    import sys
    import traceback

    traceback.print_exc()
    print(
        "fusekit: internal error: this is a bug in fusekit, not a problem with your input; "
        "please file an issue with the command and the traceback above",
        file=sys.stderr,
    )


__all__ = ["app", "main"]

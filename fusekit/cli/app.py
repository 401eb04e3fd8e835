"""The typer app and the error boundary every command shares.

Commands import torch-heavy modules inside their bodies, so ``fusekit --help``
and ``fusekit strategies`` stay instant.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

import typer

from fusekit.errors import FusekitError
from fusekit.log import LEVELS, library_bars_off, set_level

app = typer.Typer(
    name="fusekit",
    help="Fuse language models: CALM, FuseLLM, block expansion, depth up-scaling.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _close_progress_bars() -> None:
    """End any progress bar left open by the failure, so the error starts its own line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def fail(lines: list[str]) -> typer.Exit:
    """Print ``fusekit: error: …`` lines and return the exit to raise (status 2)."""
    _close_progress_bars()
    for line in lines:
        print(f"fusekit: error: {line}", file=sys.stderr)
    return typer.Exit(2)


def check_json_flag(as_json: bool, dry_run: bool, record: str) -> None:
    """``--json`` prints a dry run's plan; without ``--dry-run`` the line says where a
    real run's record is (``record``) instead."""
    if as_json and not dry_run:
        raise fail([f"--json goes with --dry-run ({record})"])


_OS_ADVICE = {
    errno.EACCES: "permission denied; choose a folder you can write to, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.EROFS: "the filesystem is read-only; choose a writable folder",
    errno.ENOSPC: "no space left on the device; free some space or choose another folder",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another folder",
    errno.EISDIR: "is a folder; give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
}


def os_error_line(exc: OSError) -> str | None:
    """One line naming the path and what to do, for OS errors a user can fix (else None)."""
    advice = _OS_ADVICE.get(exc.errno or -1)
    if advice is None:
        return None
    path = exc.filename if exc.filename is not None else "(unknown path)"
    return f"{path}: {advice}"


def user_errors(func: F) -> F:
    """Turn ``FusekitError`` (and OS errors a user can fix: permissions, a full disk, a
    folder where a file belongs) into one line per problem and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:

        library_bars_off()  # the command's own lines report progress
        try:
            return func(*args, **kwargs)
        except FusekitError as exc:
            raise fail(exc.lines()) from None
        except OSError as exc:
            line = os_error_line(exc)
            if line is None:
                raise
            raise fail([line]) from None
        except KeyboardInterrupt as exc:
            raise typer.Exit(interrupted(exc)) from None

    return wrapper  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds exactly as Ctrl-C does.

    Schedulers (Slurm's time limit, Kubernetes, ``docker stop``) end a job with
    SIGTERM, whose default action kills the process on the spot: no message, the
    temporary output folder left behind.  As an exception, the atomic output
    removes its temporary folder and the run keeps its checkpoints for ``--resume``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` while the command runs; the old handler after."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted(exc: KeyboardInterrupt) -> int:
    """Say the run was stopped (one line) and return the shell's status for the signal."""
    _close_progress_bars()
    if isinstance(exc, Terminated):
        print(f"fusekit: terminated ({exc}); nothing was written", file=sys.stderr)
        return 128 + exc.signum
    print("fusekit: interrupted; nothing was written", file=sys.stderr)
    return 130


@app.callback()
def _global_options(
    log_level: str | None = typer.Option(
        None, "--log-level", help="debug | info (default) | warning | error", metavar="LEVEL"
    ),
    quiet: bool = typer.Option(
        False, "-q", "--quiet", help="warnings and errors only (--log-level warning)"
    ),
) -> None:

    level = "warning" if quiet else (log_level or "").strip().lower() or None
    if level is None:
        return  # FUSEKIT_LOG_LEVEL, or info
    if level not in LEVELS:
        raise fail([f"--log-level {log_level!r}: choose one of {', '.join(LEVELS)}"])
    set_level(level)

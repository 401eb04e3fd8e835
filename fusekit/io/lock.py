"""One run at a time per output: an ``flock`` on a file beside its checkpoints.

Two runs of one output would train into the same checkpoint folder, and the one
that failed would clear or advertise the other's checkpoints.  ``flock`` dies
with its process, so a lock file a killed run left behind blocks no one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from fusekit.errors import FusekitError


class RunInProgressError(FusekitError):
    """Another fusekit run holds the lock on the same output's checkpoints."""


def _try_lock(path: Path) -> int | None:
    """A descriptor holding ``flock`` on the file now at ``path``; None if it was just
    removed (its holder was releasing it): the caller opens the path again."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        current = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        current = False
    except BaseException:
        os.close(fd)
        raise
    if not current:
        os.close(fd)
        return None
    return fd


def lock_checkpoints(out: Path, path: Path) -> Callable[[], None]:
    """Lock ``out``'s checkpoints (through the file ``path``) for this run, or refuse at
    once; returns the release, which removes the file.  The descriptor is not inherited, so the ranks
    ``run_distributed`` launches never hold or wait for the lock: their parent
    holds it for them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = None
    while fd is None:
        try:
            fd = _try_lock(path)
        except BlockingIOError:
            raise RunInProgressError(
                f"another fusekit run is using {out} and its checkpoints; wait for that run to "
                "end (or stop it), or choose another -o"
            ) from None
    held = fd

    def release() -> None:
        path.unlink(missing_ok=True)
        os.close(held)

    return release

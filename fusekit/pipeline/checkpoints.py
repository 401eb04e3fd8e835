"""The one owner of a run's checkpoints: where they live, which are kept, resumed or removed.

Checkpoints survive a crash in ``.OUT.checkpoints/<unit>/`` beside the output, and
the run that works on them holds a lock beside that folder.  Only the parent
process of a run (``fusekit.pipeline.run.run``) and, for a unit whose every step
was non-finite, the rank that saves (``fusekit.pipeline.stages``) remove any; ``fit``
and the ranks only read and write them.  What makes one complete is the format's
business (``fusekit.training.checkpoints``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.training.checkpoints import (
    checkpoint_folders,
    checkpoint_problem,
    complete_checkpoints,
    resume_point,
)


def checkpoint_root(out: Path) -> Path:
    """The stable folder beside the output where checkpoints survive a crash."""
    out = Path(out).expanduser().absolute()
    return out.parent / f".{out.name}.checkpoints"


def lock_file(out: Path) -> Path:
    """The file a run locks while it owns ``out``'s checkpoints.

    Beside the checkpoint folder, not in it: starting over removes that folder,
    and the lock must stay held while it does.
    """
    root = checkpoint_root(out)
    return root.with_name(root.name + ".lock")


def discard_incomplete(checkpoint_dir: Path, label: str) -> None:
    """Remove the checkpoints resume cannot use, one warning each naming it and why.

    Only the process that owns the folder calls this, before training: resume then
    starts from the newest complete checkpoint, and ``Trainer`` never saves into a
    folder that still holds a broken file or a stale fingerprint.
    """
    for folder in checkpoint_folders(checkpoint_dir):
        problem = checkpoint_problem(folder)
        if problem is not None:
            log.warning(f"fusekit: {label}: skipping {folder.name} ({problem}); removing it")
            shutil.rmtree(folder, ignore_errors=True)


def prepare_checkpoints(
    root: Path,
    units: list[str],
    *,
    resume: bool,
    fingerprint: Callable[[str], dict[str, Any]],
    label: Callable[[str], str],
) -> None:
    """Before any rank starts: make ``root`` hold only what this run may continue from.

    With ``resume``, another run's checkpoints are refused first (their fingerprint
    differs), then the ones no resume can use are removed, each said.  Without it,
    the folder is removed, saying so when it held a run that could have continued.
    """
    if resume:
        for unit in units:
            resume_point(root / unit, fingerprint(unit))
        for unit in units:
            discard_incomplete(root / unit, label(unit))
    elif root.exists():
        if any(complete_checkpoints(root / unit) for unit in units):
            log.info(
                f"fusekit: starting over; removing the checkpoints in {root} "
                "(--resume continues from them)"
            )
        remove(root)


def remove(folder: Path) -> None:
    """Remove a run's (or one unit's) checkpoints: the run finished, or none can be resumed."""
    shutil.rmtree(folder, ignore_errors=True)


def leftovers(root: Path) -> None:
    """After a failed run: keep checkpoints resume can use and say where; remove the rest."""
    if not root.exists():
        return
    units = [p for p in root.iterdir() if p.is_dir()]
    if any(complete_checkpoints(u) for u in units):
        log.info(f"fusekit: checkpoints kept in {root}; rerun with --resume to continue")
    else:
        remove(root)

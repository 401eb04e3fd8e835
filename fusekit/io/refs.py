"""Model references -> local folders, for building and for planning.

``fusekit.sources.resolve_model`` turns a recipe's model reference (a local folder,
or a ``from_scratch`` spec that is trained and cached on first use) into a folder.
Planning (``--dry-run``) must not train anything, so ``peek_model`` returns the
folder only when it already exists, and None for a from-scratch model that has
not been trained yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_model(ref: Any) -> Path:
    """A local folder for ``ref``, training a from-scratch model if needed."""
    from fusekit.sources import resolve_model as _resolve

    return Path(_resolve(ref))


def peek_model(ref: Any) -> Path | None:
    """Like ``resolve_model`` but never trains: None for an untrained from-scratch model."""
    spec = getattr(ref, "from_scratch", None)
    if spec is None:
        return resolve_model(ref)
    from fusekit.sources import scratch_folder

    folder = Path(scratch_folder(spec))
    return folder if (folder / "fusekit.json").is_file() else None


def local_settings(ref: Any) -> dict[str, bool]:
    """``allow_pickle`` / ``trust_remote_code`` of a local reference (False otherwise)."""
    return {
        "allow_pickle": bool(getattr(ref, "allow_pickle", False)),
        "trust_remote_code": bool(getattr(ref, "trust_remote_code", False)),
    }

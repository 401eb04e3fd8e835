"""The checkpoint format ``fit`` writes and resume reads: what makes one complete.

``Trainer`` saves ``checkpoint-N`` folders; ``fit`` adds a fingerprint of what
determines the weights, written last, so a folder without it never finished
saving.  This module only reads (and, through the callback, writes the
fingerprint); deciding which checkpoints to keep, resume or remove is the run's
(``fusekit.pipeline.checkpoints``), so one owner deletes them.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from fusekit.errors import FusekitError, listing
from fusekit.io.safetensors_format import read_header

FINGERPRINT_FILE = "fusekit-fingerprint.json"


class ResumeMismatchError(FusekitError):
    """A checkpoint was made by a run with other data, settings or inputs."""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay leaves (compared whole)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: value}


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The flattened field names whose values differ between two fingerprints."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def checkpoint_step(path: Path) -> int:
    """N of a ``checkpoint-N`` folder."""
    return int(path.name.rsplit("-", 1)[1])


def _file_problem(path: Path) -> str | None:
    """What is wrong with one checkpoint file, judged without reading any tensor."""
    if path.suffix == ".safetensors":
        try:
            read_header(path)  # the header against the file's size: truncation shows here
        except (OSError, ValueError) as exc:
            return str(exc)
    elif path.suffix == ".json":
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "is not valid JSON (cut short?)"
        shards = doc.get("weight_map") if isinstance(doc, dict) else None
        if isinstance(shards, dict):
            missing = sorted(
                {str(s) for s in shards.values() if not (path.parent / str(s)).is_file()}
            )
            if missing:
                return f"names shards that are missing ({listing(missing)})"
    elif path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
        # torch.save writes a zip whose directory comes last: a cut-short file lacks it
        return "is empty or cut short"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when every file in it reads back.

    The fingerprint is written last, so without it the save never finished.  With
    it, a file can still be cut short (a full disk, a crash in a filesystem's write
    back), and ``Trainer`` would stop in ``torch.load`` or safetensors with a
    traceback; so every safetensors header is checked against its file's size,
    every shard an index names must exist, every JSON file must parse and every
    ``torch.save`` file must end with its zip directory.
    """
    if not (folder / FINGERPRINT_FILE).is_file():
        return f"its save did not finish: no {FINGERPRINT_FILE}"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not any(p.suffix == ".safetensors" for p in files):
        return "it holds no weights (*.safetensors)"
    for path in files:
        problem = _file_problem(path)
        if problem is not None:
            return f"{path.name}: {problem}"
    return None


def checkpoint_folders(checkpoint_dir: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder, complete or not, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.rsplit("-", 1)[1].isdigit() and p.is_dir()
    ]
    return sorted(found, key=checkpoint_step)


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders resume can use (``checkpoint_problem`` finds none), oldest first."""
    return [p for p in checkpoint_folders(checkpoint_dir) if checkpoint_problem(p) is None]


def resume_point(checkpoint_dir: Path, fingerprint: dict[str, Any]) -> Path | None:
    """The newest complete checkpoint to continue from, or None; refuses another run's."""
    found = complete_checkpoints(checkpoint_dir)
    if not found:
        return None
    latest = found[-1]
    old = json.loads((latest / FINGERPRINT_FILE).read_text())
    changed = fingerprint_diff(old, fingerprint)
    if changed:
        raise ResumeMismatchError(
            f"cannot resume from {latest}: it was made with different {listing(changed, 6)}; "
            "restore those settings, or run without --resume to start over"
        )
    return latest


def fingerprint_callback(fingerprint: dict[str, Any]) -> Any:
    from transformers import TrainerCallback

    class WriteFingerprint(TrainerCallback):
        """Marks a checkpoint complete: Trainer calls ``on_save`` after writing all of it."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                tmp = folder / (FINGERPRINT_FILE + ".tmp")
                tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True, default=str))
                tmp.replace(folder / FINGERPRINT_FILE)

    return WriteFingerprint()

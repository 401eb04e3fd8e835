"""``fit``: the one ``transformers.Trainer`` run behind every strategy and baseline.

What it adds to ``Trainer``:

* **Checkpoints on by default** in a stable folder beside the output
  (``.OUT.checkpoints/<unit>/``), every tenth of the run unless ``train.save_steps``
  says otherwise, so ``--resume`` works after a crash without configuring anything.
* **A fingerprint** of what determines the weights (the recipe without output,
  logging and resume fields, the inputs' content hashes, the plan) written into
  every checkpoint once it is complete.  Resuming a checkpoint whose fingerprint
  differs is refused, naming the fields that differ: continuing another run's
  optimizer state would give weights that no recipe describes.
* **Only checkpoints that read back** are resumed from (``checkpoint_problem``): a
  crash or a full disk while saving leaves files cut short, which ``Trainer``
  would load into a traceback; resume falls back to the newest complete one and
  says which it skipped and why.
* **Numerical guards**: data that predicts no token is refused; a non-finite loss
  or gradient stops the run naming the step, or with ``train.skip_nonfinite`` the
  step is skipped and counted (see ``FusekitTrainer``).
* **The training record** (``TrainingRecord``): steps, the loss curve over the
  whole run (resumed runs included), ``resumed_from_step`` and ``world_size``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.errors import DataError, FusekitError, listing
from fusekit.io.safetensors_format import read_header
from fusekit.result import TrainingRecord

FINGERPRINT_FILE = "fusekit-fingerprint.json"

#: TrainSpec fields that do not change the weights: a resume may change them.
NOT_WEIGHTS_TRAIN = frozenset(
    {"resume", "save_steps", "save_total_limit", "log_steps", "report_to",
     # recomputing activations gives the same loss and gradients (tests/pipeline/
     # test_memory_knobs.py): switching it on to resume after running out of memory is fine
     "gradient_checkpointing"}
)  # fmt: skip


class ResumeMismatchError(FusekitError):
    """A checkpoint was made by a run with other data, settings or inputs."""


def default_save_steps(spec: Any) -> int:
    """Checkpoint every tenth of the run: at most 10 % of the work is lost to a crash."""
    if spec.save_steps:
        return int(spec.save_steps)
    if spec.steps:
        return max(1, math.ceil(spec.steps / 10))
    return 500


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


def _step(path: Path) -> int:
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


def _checkpoint_folders(checkpoint_dir: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder, complete or not, oldest first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [
        p
        for p in checkpoint_dir.glob("checkpoint-*")
        if p.name.rsplit("-", 1)[1].isdigit() and p.is_dir()
    ]
    return sorted(found, key=_step)


def complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders resume can use (``checkpoint_problem`` finds none), oldest first."""
    return [p for p in _checkpoint_folders(checkpoint_dir) if checkpoint_problem(p) is None]


def discard_incomplete(checkpoint_dir: Path, label: str) -> None:
    """Remove the checkpoints resume cannot use, one warning each naming it and why.

    Only the process that owns the folder calls this, before training: resume then
    starts from the newest complete checkpoint, and ``Trainer`` never saves into a
    folder that still holds a broken file or a stale fingerprint.
    """
    for folder in _checkpoint_folders(checkpoint_dir):
        problem = checkpoint_problem(folder)
        if problem is not None:
            log.warning(f"fusekit: {label}: skipping {folder.name} ({problem}); removing it")
            shutil.rmtree(folder, ignore_errors=True)


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


def _fingerprint_callback(fingerprint: dict[str, Any]) -> Any:
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


def _step_counter() -> Any:
    from transformers import TrainerCallback

    class CountSteps(TrainerCallback):
        """Counts the optimizer steps this process really ran (resume skips the rest)."""

        def __init__(self) -> None:
            self.steps = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps += 1

    return CountSteps()


def fit(
    built: Any,
    spec: Any,
    checkpoint_dir: str | Path,
    *,
    fingerprint: dict[str, Any],
    resume: bool = False,
    label: str = "model",
    log_path: str | Path | None = None,
    callbacks: Sequence[Any] = (),
    clear_stale: bool = True,
) -> TrainingRecord:
    """Train ``built.model`` per ``spec``; returns the training record.  ``steps: 0`` trains nothing.

    ``resume`` continues the newest complete checkpoint in ``checkpoint_dir`` (after
    checking its fingerprint); without it, checkpoints left there are removed first.
    ``clear_stale`` says this process owns the folder and removes what is stale there
    (with ``resume``, the incomplete checkpoints); the pipeline's ranks pass False,
    ``api.run`` having done it before any of them started.
    """
    from transformers import PrinterCallback

    from fusekit.training.args import to_training_arguments
    from fusekit.training.data import predicted_tokens
    from fusekit.training.progress import progress_callback
    from fusekit.training.trainer import FusekitTrainer, NonFiniteLossError

    if spec.steps == 0:
        return TrainingRecord(trained=False)
    if not predicted_tokens(built.dataset):
        raise DataError(
            f"{label}: the training data predicts no token (every example is a single token or "
            "fully masked); give longer documents or completions"
        )
    checkpoint_dir = Path(checkpoint_dir)
    start_from = resume_point(checkpoint_dir, fingerprint) if resume else None
    if clear_stale and resume:
        discard_incomplete(checkpoint_dir, label)
    if resume and start_from is None:
        log.info(f"fusekit: {label}: no checkpoint to resume from; starting at step 0")
    if clear_stale and not resume and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    if start_from is not None:
        log.info(f"fusekit: {label}: resuming from {start_from.name} (step {_step(start_from)})")
    args = to_training_arguments(
        spec, checkpoint_dir, save_strategy="steps", save_steps=default_save_steps(spec)
    )
    counter = _step_counter()
    trainer_class = built.trainer_class or FusekitTrainer
    trainer = trainer_class(
        model=built.model,
        args=args,
        train_dataset=built.dataset,
        data_collator=built.collator,
        callbacks=[_fingerprint_callback(fingerprint), counter, progress_callback(label),
                   *callbacks],
        trainable=built.trainable,
        skip_nonfinite=spec.skip_nonfinite,
        **built.trainer_kwargs,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # raw dicts; progress_callback says it readably
    clock = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
    seconds = time.perf_counter() - clock
    built.model.eval()
    history = trainer.state.log_history
    if log_path is not None and trainer.is_world_process_zero():
        with open(log_path, "w", encoding="utf-8") as fh:
            for row in history:
                fh.write(json.dumps({"unit": label, **row}) + "\n")
    curve = [(int(r["step"]), float(r["loss"])) for r in history if "loss" in r]
    report = getattr(trainer, "trainable_report", {})
    skipped = list(getattr(trainer, "skipped_steps", []))
    if skipped and counter.steps and len(skipped) >= counter.steps:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # they hold the untrained input
        raise NonFiniteLossError(
            f"{label}: every one of the {counter.steps} steps had a non-finite loss or gradient, "
            "so nothing was trained; check the input weights for NaN, lower train.lr, or train "
            "in fp32 (train.precision)"
        )
    if skipped:
        log.warning(f"fusekit: {label}: skipped {len(skipped)} step(s) with a non-finite loss "
                    f"or gradient ({listing([str(s) for s in skipped])})")  # fmt: skip
    extra = built.after_fit(trainer) if built.after_fit is not None else {}
    return TrainingRecord(
        trained=True,
        steps=int(result.global_step),
        final_loss=curve[-1][1] if curve else float(result.training_loss),
        mean_loss=float(result.training_loss),
        loss_curve=curve,
        seconds=round(seconds, 2),
        examples=len(built.dataset),
        trainable_parameters=report.get("trainable_parameters"),
        total_parameters=report.get("total_parameters"),
        trainable_share=report.get("trainable_share"),
        resumed_from_step=_step(start_from) if start_from else None,
        steps_run=counter.steps,
        world_size=int(trainer.args.world_size),
        skipped_nonfinite_steps=len(skipped),
        extra=extra,
    )

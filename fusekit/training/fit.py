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
  would load into a traceback; resume continues the newest complete one (the run's
  checkpoint owner, ``fusekit.pipeline.checkpoints``, has removed the others, saying
  which and why).
* **Numerical guards**: data that predicts no token is refused; a non-finite loss
  or gradient stops the run naming the step, or with ``train.skip_nonfinite`` the
  step is skipped and counted (see ``FusekitTrainer``).
* **The training record** (``TrainingRecord``): steps, the loss curve over the
  whole run (resumed runs included), ``resumed_from_step`` and ``world_size``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.errors import DataError, NonFiniteLossError, listing
from fusekit.recipe.common import TrainSpec
from fusekit.result import TrainingRecord
from fusekit.training.args import to_training_arguments
from fusekit.training.checkpoints import checkpoint_step, fingerprint_callback, resume_point
from fusekit.training.curve import curve_points
from fusekit.training.progress import progress_callback

#: TrainSpec fields that do not change the weights: a resume may change them.
NOT_WEIGHTS_TRAIN = frozenset(
    {"resume", "save_steps", "save_total_limit", "log_steps", "report_to",
     # scoring runs without gradients and outside training's random numbers (curve.py)
     "eval_steps",
     # recomputing activations gives the same loss and gradients (tests/pipeline/
     # test_memory_knobs.py): switching it on to resume after running out of memory is fine
     "gradient_checkpointing"}
)  # fmt: skip


def default_save_steps(spec: TrainSpec) -> int:
    """Checkpoint every tenth of the run: at most 10 % of the work is lost to a crash."""
    if spec.save_steps:
        return int(spec.save_steps)
    if spec.steps:
        return max(1, math.ceil(spec.steps / 10))
    return 500


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
    spec: TrainSpec,
    checkpoint_dir: str | Path,
    *,
    fingerprint: dict[str, Any],
    resume: bool = False,
    label: str = "model",
    log_path: str | Path | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainingRecord:
    """Train ``built.model`` per ``spec``; returns the training record.  ``steps: 0`` trains nothing.

    ``resume`` continues the newest complete checkpoint in ``checkpoint_dir`` (after
    checking its fingerprint).  ``fit`` never removes a checkpoint: the run that owns
    the folder (``fusekit.pipeline.checkpoints``) cleared or pruned it before any rank
    started, and removes it when a run fails in a way no resume can use.
    """
    from transformers import PrinterCallback

    from fusekit.data.causal_lm import predicted_tokens
    from fusekit.training.trainer import FusekitTrainer

    if spec.steps == 0:
        return TrainingRecord(trained=False)
    # a stream has no length: StreamedExamples.first() made this check when it was built
    if hasattr(built.dataset, "__len__") and not predicted_tokens(built.dataset):
        raise DataError(
            f"{label}: the training data predicts no token (every example is a single token or "
            "fully masked); give longer documents or completions"
        )
    checkpoint_dir = Path(checkpoint_dir)
    start_from = resume_point(checkpoint_dir, fingerprint) if resume else None
    if resume and start_from is None:
        log.info(f"fusekit: {label}: no checkpoint to resume from; starting at step 0")
    if start_from is not None:
        log.info(
            f"fusekit: {label}: resuming from {start_from.name} (step {checkpoint_step(start_from)})"
        )
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
        callbacks=[fingerprint_callback(fingerprint), counter, progress_callback(label),
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
        eval_curve=curve_points(history),
        seconds=round(seconds, 2),
        examples=len(built.dataset) if hasattr(built.dataset, "__len__") else 0,
        trainable_parameters=report.get("trainable_parameters"),
        total_parameters=report.get("total_parameters"),
        trainable_share=report.get("trainable_share"),
        resumed_from_step=checkpoint_step(start_from) if start_from else None,
        steps_run=counter.steps,
        world_size=int(trainer.args.world_size),
        skipped_nonfinite_steps=len(skipped),
        extra=extra,
    )

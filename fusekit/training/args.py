"""``TrainSpec`` -> ``transformers.TrainingArguments``.

One mapping in one place, so every strategy trains with the same semantics:
checkpoints, resume, gradient accumulation, precision, gradient checkpointing, the
optimizer and distributed launch all come from ``transformers.Trainer`` rather
than from per-strategy loops.  ``precision: bf16``/``fp16`` is autocast over the
weights as loaded (fp32 master weights unless ``load.dtype`` says otherwise).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fusekit.recipe.common import TrainSpec


def _checkpointing_arguments(arguments_class: type) -> dict[str, Any]:
    """``TrainingArguments`` fields for non-reentrant gradient checkpointing.

    Non-reentrant, because fusekit trains behind frozen embeddings (block expansion,
    LoRA, CALM's anchor): reentrant checkpointing ties a block's output into the
    graph through its tensor inputs only, not its weights, so a block whose input
    needs no gradient (frozen embeddings, frozen blocks below) would give its own
    trainable weights none, and the run would train nothing without a word.
    transformers 5 renamed the field ``activation_checkpointing``; the old name
    still works there, with a warning.
    """
    names = {f.name for f in dataclasses.fields(arguments_class)}
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing"
    )
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def to_training_arguments(spec: TrainSpec, checkpoint_dir: Path, **overrides: Any) -> Any:
    """Arguments for ``Trainer``; ``checkpoint_dir`` receives checkpoints and logs only."""
    import torch
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.grad_accum,
        learning_rate=spec.lr,
        lr_scheduler_type=spec.schedule,
        warmup_steps=spec.warmup_steps,
        weight_decay=spec.weight_decay,
        adam_beta2=spec.adam_beta2,
        max_grad_norm=spec.max_grad_norm,
        seed=spec.seed,
        logging_steps=spec.log_steps,
        save_strategy="steps" if spec.save_steps else "no",
        save_steps=spec.save_steps or 500,
        save_total_limit=spec.save_total_limit,
        report_to=spec.report_to,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        bf16=spec.precision == "bf16",
        fp16=spec.precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        # fusekit.training.progress prints one labelled line per log step instead of the
        # Trainer's bar and raw dicts, which interleave when models train side by side
        disable_tqdm=True,
        # a NaN loss must stay visible (the guard in FusekitTrainer stops on it)
        logging_nan_inf_filter=False,
        optim=spec.optim,
    )
    if spec.gradient_checkpointing:
        kwargs.update(_checkpointing_arguments(TrainingArguments))
    if spec.steps is not None:
        kwargs["max_steps"] = spec.steps
    else:
        kwargs["num_train_epochs"] = spec.epochs
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)

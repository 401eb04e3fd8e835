"""``TrainSpec`` -> ``transformers.TrainingArguments``.

One mapping in one place, so every strategy trains with the same semantics:
checkpoints, resume, gradient accumulation, precision and distributed launch all
come from ``transformers.Trainer`` rather than from per-strategy loops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def to_training_arguments(spec: Any, checkpoint_dir: Path, **overrides: Any) -> Any:
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
    )
    if spec.steps is not None:
        kwargs["max_steps"] = spec.steps
    else:
        kwargs["num_train_epochs"] = spec.epochs
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)

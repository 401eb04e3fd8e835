"""The shared trainer: ``transformers.Trainer`` plus a freeze mask and a loss log.

Strategies that only need next-token loss (depth up-scaling, block expansion,
from-scratch parents) use this class as is; CALM and FuseLLM subclass it and
override ``compute_loss`` with their pure loss functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from fusekit.errors import PlanError

Trainable = Callable[[str], bool] | Iterable[str] | None


def trainable_predicate(trainable: Trainable) -> Callable[[str], bool]:
    """A name predicate from ``None`` (all), a predicate, or exact names / ``re:`` patterns."""
    if trainable is None:
        return lambda name: True
    if callable(trainable):
        return trainable
    names = set()
    patterns = []
    for item in trainable:
        if item.startswith("re:"):
            patterns.append(re.compile(item[3:]))
        else:
            names.add(item)
    return lambda name: name in names or any(p.search(name) for p in patterns)


def apply_freeze_mask(model: Any, trainable: Trainable) -> dict[str, Any]:
    """Set ``requires_grad`` from the mask (``None`` leaves it as is) and report what trains."""
    keep = None if trainable is None else trainable_predicate(trainable)
    total = n_train = 0
    for name, param in model.named_parameters():
        if keep is not None:
            param.requires_grad_(bool(keep(name)))
        total += param.numel()
        n_train += param.numel() if param.requires_grad else 0
    if n_train == 0:
        raise PlanError("the freeze mask leaves no trainable parameter; check the trainable set")
    return {
        "trainable_parameters": n_train,
        "total_parameters": total,
        "trainable_share": n_train / total,
    }


class LossLog(TrainerCallback):
    """Keeps every logged training record and appends it to a JSONL file as it comes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.history: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, **{k: float(v) for k, v in logs.items()}}
        self.history.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


class FusekitTrainer(Trainer):
    """``Trainer`` that never builds optimizer state for frozen parameters.

    ``Trainer`` already skips parameters with ``requires_grad=False`` when it
    creates the optimizer; this subclass exists so strategies have one place to
    hang their ``compute_loss`` and so the freeze mask is applied before that.
    """

    def __init__(self, *args: Any, trainable: Trainable = None, **kwargs: Any) -> None:
        model = kwargs.get("model") if "model" in kwargs else args[0]
        self.trainable_report = apply_freeze_mask(model, trainable)
        super().__init__(*args, **kwargs)


def training_summary(trainer: Trainer, result: Any, log: LossLog, seconds: float) -> dict[str, Any]:
    """The JSON-able record of a finished run that every strategy puts in ``fusekit.json``."""
    losses = [r["loss"] for r in log.history if "loss" in r]
    return {
        "trained": True,
        "steps": int(result.global_step),
        "final_loss": losses[-1] if losses else float(result.training_loss),
        "mean_loss": float(result.training_loss),
        "loss_curve": [[r["step"], r["loss"]] for r in log.history if "loss" in r],
        "seconds": round(seconds, 2),
        "examples": len(trainer.train_dataset),
        **getattr(trainer, "trainable_report", {}),
    }

"""The shared trainer: ``transformers.Trainer`` plus a freeze mask and a finite-loss guard.

Strategies that only need next-token loss (depth up-scaling, block expansion,
from-scratch parents) use this class as is; CALM and FuseLLM subclass it and
override ``compute_loss`` with their pure loss functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from transformers import Trainer

from fusekit.errors import FusekitError, PlanError


class NonFiniteLossError(FusekitError):
    """Training produced a NaN or infinite loss."""


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

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        """One step, refused when its loss is not finite.

        ``Trainer`` would log the running mean instead of a NaN and go on writing
        NaN weights; stopping at the first bad step names where it went wrong.
        """
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not bool(loss.detach().isfinite().all()):
            step = self.state.global_step + 1
            raise NonFiniteLossError(
                f"training loss became {float(loss.detach().float().mean())} at step {step}; "
                "lower train.lr, check the data, or train in fp32 (train.precision)"
            )
        return loss

"""The shared trainer: ``transformers.Trainer`` plus a freeze mask and a finite-loss guard.

Strategies that only need next-token loss (depth up-scaling, block expansion,
LoRA, from-scratch parents) use this class as is, and its loss runs the output layer
only where labels look (``fusekit.training.columns``); CALM and FuseLLM subclass it
and override ``compute_loss`` with their pure loss functions.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from transformers import Trainer

from fusekit import log
from fusekit.errors import FusekitError, NonFiniteLossError, PlanError
from fusekit.training.columns import kept_columns_loss, scored_columns
from fusekit.training.sharding import PlainCopy, enable_cpu_fsdp, sharded_units

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
    """``Trainer`` with the freeze mask applied first and a guard on every step.

    ``Trainer`` already skips parameters with ``requires_grad=False`` when it
    creates the optimizer; this subclass applies the mask before that, gives
    strategies one place to hang their ``compute_loss``, and refuses non-finite
    steps (see ``training_step``).
    """

    def __init__(
        self,
        *args: Any,
        trainable: Trainable = None,
        skip_nonfinite: bool = False,
        lr_scale: Callable[[str], float] | None = None,
        **kwargs: Any,
    ) -> None:
        model = kwargs.get("model") if "model" in kwargs else args[0]
        self.trainable_report = apply_freeze_mask(model, trainable)
        self.skip_nonfinite = skip_nonfinite
        self.lr_scale = lr_scale
        self.skipped_steps: list[int] = []
        self.plain_copy: Any = None  # under FSDP, from ``train``: see ``fusekit.training.sharding``
        super().__init__(*args, **kwargs)

    def create_accelerator_and_postprocess(self) -> None:
        """``Trainer``'s accelerator, sharding with FSDP on CPU ranks too when launched so."""

        super().create_accelerator_and_postprocess()
        if enable_cpu_fsdp(self.accelerator):
            self.is_fsdp_enabled = True
        if self.is_fsdp_enabled and self.accelerator.state.fsdp_plugin.fsdp_version != 2:
            raise FusekitError(
                "fusekit shards with FSDP2 only: set fsdp_config.fsdp_version: 2 in the "
                "accelerate config"
            )
        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            # ZeRO-3 partitions the module's own parameters, and rank 0 would save them
            # as empty tensors (seen in a two-rank run): refuse rather than write that
            raise FusekitError(
                "DeepSpeed ZeRO-3 is not supported (its partitioned weights cannot be saved "
                "from rank 0); shard with FSDP2 instead (distributed_type: FSDP, fsdp_version: 2)"
            )

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; under FSDP the model is a plain module again afterwards (rank 0)."""

        model = self.model
        self.plain_copy = PlainCopy(model) if self.is_fsdp_enabled else None
        result = super().train(*args, **kwargs)
        if self.plain_copy is not None:
            units, step = sharded_units(model), self.state.global_step
            if self.is_world_process_zero():
                kept = self.plain_copy.kept_at(step)
                how = "the last checkpoint's gathered weights" if kept else "gathering the weights"
                log.info(f"fusekit: trained with FSDP2: {units} unit(s) sharded over "
                         f"{self.args.world_size} ranks; {how} on rank 0")  # fmt: skip
            self.plain_copy.restore(model, step)
        return result

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """A checkpoint's weights; under FSDP written by rank 0 from the gathered plain module.

        ``Trainer`` hands ``_save`` a gathered state dict under FSDP, but strategies'
        own ``_save`` (CALM writes Θ_C alone) read the module, whose parameters are
        shards; saving from the plain module makes every checkpoint what one process
        would write.
        """
        if self.plain_copy is None:
            super().save_model(output_dir, _internal_call)
            return
        plain = self.plain_copy.gather(self.model)
        if self.state.global_step >= self.state.max_steps:  # the last step: ``train`` reuses it
            self.plain_copy.keep(self.state.global_step, plain)
        if plain is not None:
            sharded, self.model = self.model, plain
            try:
                self._save(output_dir)
            finally:
                self.model = sharded

    def _split_by_lr_scale(self, optimizer: Any, model: Any) -> None:
        """Split each of ``optimizer``'s groups by ``lr_scale(name)``, before its first step.

        ``Trainer`` builds the optimizer (its class, the weight-decay groups, FSDP's
        delayed creation and every other special case stay its own); each group then
        becomes one group per learning-rate factor, with ``lr`` multiplied by it, so
        the schedule created next scales every group alike.  Groups follow parameter
        order, so a resumed run rebuilds the groups its optimizer state was saved with.
        """
        assert self.lr_scale is not None
        factor = {id(p): float(self.lr_scale(name)) for name, p in model.named_parameters()}
        groups = []
        for group in optimizer.param_groups:
            parts: dict[float, list[Any]] = {}
            for param in group["params"]:
                parts.setdefault(factor.get(id(param), 1.0), []).append(param)
            for scale, params in parts.items():
                groups.append({**group, "params": params, "lr": group["lr"] * scale})
        optimizer.param_groups[:] = groups

    def create_optimizer(self, model: Any = None) -> Any:
        """The optimizer, split by ``lr_scale`` and with ``step`` made a no-op for a step
        marked as skipped."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and self.lr_scale is not None:
            self._split_by_lr_scale(optimizer, self.model if model is None else model)
        step = optimizer.step

        def guarded_step(*a: Any, **k: Any) -> Any:
            if self.skipped_steps and self.skipped_steps[-1] == self.state.global_step + 1:
                return None  # Adam's moments would still move the weights on zeroed grads
            return step(*a, **k)

        # wrapped on this one instance, the way torch's lr_scheduler wraps it
        optimizer.step = guarded_step  # type: ignore[method-assign]
        return optimizer

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """``Trainer``'s next-token loss, with the output layer run only at the columns whose
        next token is labelled when some are not (answers, assistant turns).

        The same tokens weigh the same: a mean, or a sum over ``num_items_in_batch``
        where ``Trainer`` counts tokens across accumulation and ranks.  Where outputs
        are wanted, or a label smoother or custom loss is set, ``Trainer`` computes it.
        """
        labels = inputs.get("labels")
        keep = None
        if (
            not return_outputs
            and labels is not None
            and self.label_smoother is None
            and self.compute_loss_func is None
            and _keeps_logits(self.accelerator.unwrap_model(model))
        ):
            keep = scored_columns(labels)
        if keep is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        assert labels is not None
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
        counted = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss = kept_columns_loss(outputs["logits"], labels, keep, counted)
        if self.args.average_tokens_across_devices and counted is not None:
            # as ``Trainer.compute_loss``: the count spans every rank, the mean is per rank
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return loss

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        """One micro-step, refused when its loss or its gradient is not finite.

        ``Trainer`` would log the running mean instead of a NaN and go on writing
        NaN weights; stopping at the first bad step names where it went wrong.
        With ``train.skip_nonfinite`` the whole optimizer step is dropped instead
        (its gradients zeroed, the update skipped) and counted in the summary.
        """
        import torch

        loss = super().training_step(model, inputs, num_items_in_batch)
        step = self.state.global_step + 1
        what = None
        if not bool(loss.detach().isfinite().all()):
            what = f"training loss became {float(loss.detach().float().mean())}"
        else:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads and not bool(torch.nn.utils.get_total_norm(grads).isfinite()):
                what = "a gradient became non-finite (the loss was finite)"
        if what is None:
            return loss
        if not self.skip_nonfinite:
            raise NonFiniteLossError(
                f"{what} at step {step}; lower train.lr, check the data, train in fp32 "
                "(train.precision), or set train.skip_nonfinite: true to skip such steps"
            )
        model.zero_grad(set_to_none=True)
        if not self.skipped_steps or self.skipped_steps[-1] != step:
            self.skipped_steps.append(step)
        return torch.zeros_like(loss.detach())


def _keeps_logits(model: Any) -> bool:
    """Whether ``model`` (a peft wrapper's base model for LoRA) takes ``logits_to_keep``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(type(base).forward).parameters

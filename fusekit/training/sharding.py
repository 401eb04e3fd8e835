"""FSDP2 under ``Trainer``: honoured on CPU ranks, and a plain model once training ends.

accelerate applies FSDP only on an accelerator: ranks that join with gloo on CPU
become ``MULTI_CPU`` and train DDP although the launch asked for FSDP (the config
is accepted and the run "works", but nothing is sharded).  ``enable_cpu_fsdp``
turns such a state into the FSDP state accelerate would have made, so the same
``fully_shard`` path that GPUs take (auto wrap, sharded optimizer state, FULL
state-dict checkpoints) runs on CPU: that is what lets a two-rank CPU run prove
the sharded path in CI.

``fully_shard`` shards the model in place and cannot be undone, while every
strategy saves and scores a plain module (LoRA merges, CALM writes its
composition).  ``PlainCopy`` keeps a parameter-less skeleton of the model from
before sharding; after training the full weights are gathered (a collective, on
every rank) into it on rank 0, which then holds exactly what a one-process run
holds.
"""

from __future__ import annotations

import copy
import os
from typing import Any


def fsdp_requested() -> bool:
    """Whether ``accelerate launch`` was asked for FSDP (its launcher sets this variable)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_cpu_fsdp(accelerator: Any) -> bool:
    """Make a CPU (gloo) ``accelerator`` shard with FSDP as launched; whether it changed.

    Only when FSDP was requested and accelerate fell back to ``MULTI_CPU``; on an
    accelerator the state is already FSDP and is left alone.  The plugin reads the
    ``FSDP_*`` variables the launcher set from the config, as accelerate's own does.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if not fsdp_requested() or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin()
    if state.mixed_precision != "no":  # as AcceleratorState does for the FSDP it sets up
        plugin.set_mixed_precision(state.mixed_precision)
    AcceleratorState._shared_state["fsdp_plugin"] = plugin
    AcceleratorState._shared_state["distributed_type"] = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def sharded_units(model: Any) -> int:
    """How many modules of ``model`` FSDP2 shards as units (0: it was not sharded)."""
    from torch.distributed.fsdp import FSDPModule

    return sum(isinstance(m, FSDPModule) for m in model.modules())


class PlainCopy:
    """A skeleton of ``model`` on the meta device, taken before FSDP shards it.

    Parameters become meta tensors (no memory); buffers and every other attribute
    are copied, so the skeleton is the same module tree, ties included.
    """

    def __init__(self, model: Any) -> None:
        import torch

        memo: dict[int, Any] = {
            id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
            for p in model.parameters()
        }
        self.skeleton = copy.deepcopy(model, memo)
        #: the step and rank 0's gathered module of a checkpoint saved at the last step:
        #: the weights cannot change after it, and gathering a large model twice costs minutes
        self.kept_step: int | None = None
        self.kept_model: Any = None

    def keep(self, step: int, plain: Any) -> None:
        """Keep a checkpoint's gather (``plain``: None off rank 0) for ``restore`` at ``step``."""
        self.kept_step, self.kept_model = step, plain

    def kept_at(self, step: int) -> bool:
        """Whether a checkpoint's gather at ``step`` was kept; the same on every rank."""
        return self.kept_step == step

    def gather(self, model: Any) -> Any:
        """The sharded ``model``'s full weights as a plain module on rank 0 (CPU), else None.

        Every rank must call this: the gather is a collective.
        """
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if dist.get_rank() != 0:
            return None
        plain = copy.deepcopy(self.skeleton)
        tied: dict[int, list[str]] = {}
        for name, param in plain.named_parameters(remove_duplicate=False):
            tied.setdefault(id(param), []).append(name)
        plain.load_state_dict(full, strict=True, assign=True)
        for first, *others in tied.values():  # assign gives each name its own tensor: re-tie
            for name in others:
                owner, _, leaf = name.rpartition(".")
                setattr(plain.get_submodule(owner), leaf, plain.get_parameter(first))
        return plain

    def restore(self, model: Any, step: int) -> None:
        """After training (at ``step``): on rank 0 ``model`` becomes the plain module, in place.

        ``built.model`` is the object the pipeline saves and scores, so it takes over
        the gathered module's class and attributes; the other ranks keep their
        shards, which nothing reads after training.  The gather of a checkpoint saved
        at ``step`` is reused (every rank kept it at the same step, so no rank waits in
        a collective the others skip).
        """
        plain = self.kept_model if self.kept_at(step) else self.gather(model)
        self.kept_step = self.kept_model = None
        if plain is not None:
            model.__class__ = plain.__class__
            model.__dict__ = plain.__dict__

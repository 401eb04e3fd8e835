"""The paper's controls for CALM, trained on the same D_C with the same budget.

* ``lora`` — LoRA on every linear layer of the anchor's decoder blocks, with the
  rank chosen so its parameter count matches Θ_C's (the paper's "LoRA of equal
  parameter count"): does the gain come from the augment, or from parameters?
* ``random_augment`` — the same composition over an augment of the same
  architecture with random weights: does the augment's *knowledge* matter?
* ``encoder`` — the same composition with the augment computed once from the
  prompt (``augment_mode="encoder"``): does iterative decoding matter?
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from fusekit import log
from fusekit.errors import PlanError
from fusekit.strategies.calm.layers import decoder_layers

BASELINES = ("lora", "random_augment", "encoder")


def _linear_shapes(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, in, out) of every Linear/Conv1D inside the decoder blocks."""
    from transformers.pytorch_utils import Conv1D

    blocks = decoder_layers(model)
    shapes = []
    for b, block in enumerate(blocks):
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear):
                shapes.append((f"{b}.{name}", module.in_features, module.out_features))
            elif isinstance(module, Conv1D):  # GPT-2 stores weights as (in, out)
                fan_in, fan_out = module.weight.shape
                shapes.append((f"{b}.{name}", fan_in, fan_out))
    return shapes


def lora_parameters_per_rank(model: nn.Module) -> int:
    """LoRA parameters per unit of rank: Σ (in + out) over the targeted layers."""
    return sum(i + o for _, i, o in _linear_shapes(model))


def lora_rank_for_budget(model: nn.Module, budget: int) -> int:
    """The rank whose LoRA parameter count is closest to ``budget``."""
    per_rank = lora_parameters_per_rank(model)
    if per_rank == 0:
        raise PlanError("the anchor has no linear layers in its decoder blocks for LoRA")
    return max(1, round(budget / per_rank))


def lora_target_names(model: nn.Module) -> list[str]:
    """Leaf names of the targeted modules (``q_proj``, ``c_attn``, …), for peft."""
    return sorted({name.rsplit(".", 1)[-1] for name, _, _ in _linear_shapes(model)})


def lora_model(
    anchor: nn.Module, budget: int, *, alpha: int | None = None, seed: int = 0
) -> tuple[Any, dict[str, int]]:
    """A trainable LoRA copy of ``anchor`` with about ``budget`` parameters (anchor untouched)."""
    import torch
    from peft import LoraConfig, get_peft_model

    rank = lora_rank_for_budget(anchor, budget)
    base = copy.deepcopy(anchor)
    # a composed anchor carries the composition's hooks; the copy must be a plain model
    for module in base.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            hooks.clear()
    fan_in_fan_out = getattr(base.config, "model_type", "") == "gpt2"
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=0.0,
        target_modules=lora_target_names(base),
        fan_in_fan_out=fan_in_fan_out,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with log.peft_deprecations_off():
            model = get_peft_model(base, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, {"rank": rank, "lora_parameters": trainable, "budget": budget}


def random_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """A model of the same architecture and size with freshly initialised weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(copy.deepcopy(model.config))
    fresh.to(next(model.parameters()).dtype)
    return fresh.eval()

"""Forward/decoding helpers shared by the structural tests."""

from __future__ import annotations

from typing import Any

import torch

from fusekit.io.kv_cache import cache_kwargs, output_cache


def token_ids(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    """Random ids above the special tokens; longer than the tiny models' sliding window."""
    return torch.randint(4, 300, (batch, length), generator=torch.Generator().manual_seed(seed))


def own_memory(model: Any) -> Any:
    """``model`` with every parameter copied into memory of its own.

    Weights loaded from safetensors may sit at any offset of the mapped file, and on
    some CPUs a kernel's summation order follows the pointer's alignment: Qwen2-MoE's
    one-output shared-expert gate then differs by one float32 ulp between two equal
    weights loaded from two files, in single-token decoding only. Fresh allocations
    are aligned alike, so an exact comparison tests the surgery, not the file layout.
    """
    for param in model.parameters():
        param.data = param.data.clone()
    return model


@torch.no_grad()
def uncached_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, use_cache=False).logits


@torch.no_grad()
def cached_logits(model: Any, ids: torch.Tensor, prefill: int = 5) -> torch.Tensor:
    """Prefill ``prefill`` tokens, then feed the rest one at a time through the KV cache."""
    out = model(ids[:, :prefill], use_cache=True)
    logits, past = [out.logits], output_cache(out)
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t : t + 1], **cache_kwargs(model, past))
        logits.append(out.logits)
        past = output_cache(out)
    return torch.cat(logits, dim=1)


@torch.no_grad()
def greedy(model: Any, ids: torch.Tensor, *, use_cache: bool = True, new: int = 6) -> Any:
    return model.generate(
        ids,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_logits=True,
    )

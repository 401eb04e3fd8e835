"""Function preservation: how far two models' logits differ on the same token ids.

Surgery that claims to preserve function (block expansion's zero-initialised
blocks, a CALM composition at initialisation) must give max |Δlogits| == 0
against the original — exactly, not approximately — both in one full forward
and when decoding through the KV cache, where a wrongly spliced layer index or
cache slot would show up.  The cached path feeds ``prefill`` tokens at once and
the rest one at a time, as ``generate`` does.  Only positions the attention
mask marks as real are compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fusekit.evaluation.adapters import ModelAdapter, as_scorable


def _as_batch(
    input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
    attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.shape != ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(ids.shape)}"
        )
    return ids, mask.long()


def _logits(
    model: ModelAdapter, ids: torch.Tensor, mask: torch.Tensor, use_cache: bool, prefill: int
) -> torch.Tensor:
    ids, mask = ids.to(model.device), mask.to(model.device)
    if use_cache:
        return model.cached_logits(ids, mask, prefill)
    return model.logits(ids, mask)


def max_logit_delta(
    model_a: Any,
    model_b: Any,
    input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
    attention_mask: torch.Tensor | None = None,
    *,
    use_cache: bool = False,
    prefill: int | None = None,
) -> float:
    """max |logits_a - logits_b| over the real positions of ``input_ids`` (float64 difference).

    ``use_cache`` decodes through each model's KV cache (``prefill`` tokens at
    once, default half the sequence, then one token per step).
    """
    ids, mask = _as_batch(input_ids, attention_mask)
    if prefill is None:
        prefill = max(1, ids.shape[1] // 2)
    if not 1 <= prefill <= ids.shape[1]:
        raise ValueError(f"prefill must be between 1 and {ids.shape[1]}, got {prefill}")
    a = as_scorable(model_a, require_tokenizer=False)
    b = as_scorable(model_b, require_tokenizer=False)
    logits_a = _logits(a, ids, mask, use_cache, prefill).double().cpu()
    logits_b = _logits(b, ids, mask, use_cache, prefill).double().cpu()
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            "the models' logits differ in shape: "
            f"{tuple(logits_a.shape)} vs {tuple(logits_b.shape)}"
        )
    real = mask.bool().cpu()
    if not real.any():
        return 0.0
    return float((logits_a - logits_b).abs()[real].max())


def function_preservation(
    model_a: Any,
    model_b: Any,
    input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
    attention_mask: torch.Tensor | None = None,
    *,
    prefill: int | None = None,
) -> dict[str, float | None]:
    """Both figures: ``{"max_abs_logit_delta": …, "max_abs_logit_delta_cached": …}``.

    The cached figure is ``None`` when a model's forward cannot take a KV cache.
    """
    full = max_logit_delta(model_a, model_b, input_ids, attention_mask)
    try:
        cached: float | None = max_logit_delta(
            model_a, model_b, input_ids, attention_mask, use_cache=True, prefill=prefill
        )
    except TypeError:
        cached = None
    return {"max_abs_logit_delta": full, "max_abs_logit_delta_cached": cached}

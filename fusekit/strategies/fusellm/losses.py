"""FuseLLM's objective: ``λ·CLM + (1−λ)·fusion`` on sparse targets.

The fusion term is the cross-entropy between a sparse target distribution
(a few ids and probabilities per position) and the model's softmax:

    L_fusion = −Σ_t mask_t Σ_j q_{t,j} · log p_t(id_{t,j})  /  Σ_t mask_t

computed as ``gather(log_softmax(logits), ids)``.  The reference builds a
dense vocabulary-sized target tensor on the CPU for every batch (and crashes
when the model pads its vocabulary past the tokenizer); here the only
vocabulary-sized tensors are the model's logits and their log-softmax.

``mask`` marks positions that have a gold next token — the same positions the
CLM term counts — so both terms share one normaliser, and with gradient
accumulation both divide by ``num_items_in_batch`` like ``transformers``'
own causal-LM loss.  The CLM term *is* that loss (``ForCausalLMLoss``), so at
``λ = 1`` the objective equals plain CLM training bit for bit.  For
``0 < λ < 1`` both terms read one log-softmax: the gold next token is gathered
as one more candidate beside the sparse target's, so the vocabulary-wide work
(normaliser forward, its backward) is done once instead of once per term.
"""

from __future__ import annotations

from typing import Any

import torch


def next_token_mask(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """``mask[b, t]`` is true when position ``t`` has a gold next token ``labels[b, t+1]``."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != ignore_index
    return mask


def clm_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None
) -> torch.Tensor:
    """Next-token cross-entropy exactly as ``transformers`` computes it for causal LMs."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    return ForCausalLMLoss(
        logits, labels, vocab_size=logits.shape[-1], num_items_in_batch=num_items_in_batch
    )


def _log_probs_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log p(ids)`` under ``softmax(logits)`` in float32 (``[B, T, k]`` for ``ids [B, T, k]``)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, ids.long())


def _average(
    per_position: torch.Tensor, mask: torch.Tensor, num_items_in_batch: Any
) -> torch.Tensor:
    """Sum over ``mask`` divided by ``num_items_in_batch`` or, without it, by the mask's count."""
    mask = mask.bool()
    total = torch.where(mask, per_position, 0.0).sum()
    if num_items_in_batch is not None:
        denom = num_items_in_batch
        if torch.is_tensor(denom):
            denom = denom.to(total.device)
        return total / denom
    return total / mask.sum().clamp(min=1)


def fusion_loss(
    logits: torch.Tensor,
    target_ids: torch.Tensor,
    target_probs: torch.Tensor,
    mask: torch.Tensor,
    num_items_in_batch: Any = None,
) -> torch.Tensor:
    """Soft-target cross-entropy on sparse targets ``[B, T, k]``, averaged over ``mask``."""
    log_p = _log_probs_of(logits, target_ids)  # [B, T, k]
    per_position = -(target_probs.float() * log_p).sum(dim=-1)  # [B, T]
    return _average(per_position, mask, num_items_in_batch)


def fused_objective(
    logits: torch.Tensor,
    labels: torch.Tensor,
    sparse_target: Any,
    lam: float,
    num_items_in_batch: Any = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``lam·CLM + (1−lam)·fusion`` and its parts (as floats, for logging).

    ``sparse_target`` has ``ids`` and ``probs`` (a ``SparseTarget``) or is an
    ``(ids, probs)`` pair.  At ``lam == 1`` the fusion term is not computed at
    all, so loss and gradients are those of plain CLM exactly; at ``lam == 0``
    the CLM term is skipped likewise.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    if lam == 1.0:
        clm = clm_loss(logits, labels, num_items_in_batch)
        return clm, {"clm": float(clm.detach())}
    if sparse_target is None:
        raise ValueError("lambda < 1 needs a fused target")
    ids, probs = (
        (sparse_target.ids, sparse_target.probs) if hasattr(sparse_target, "ids") else sparse_target
    )
    mask = next_token_mask(labels)
    if lam == 0.0:
        fus = fusion_loss(logits, ids, probs, mask, num_items_in_batch)
        return fus, {"fusion": float(fus.detach())}
    # Position t's gold next token labels[t + 1] (clamped where masked) is candidate 0.
    gold = torch.roll(labels, -1, dims=1).clamp(min=0).unsqueeze(-1)
    log_p = _log_probs_of(logits, torch.cat([gold, ids.long()], dim=-1))  # [B, T, 1 + k]
    clm = _average(-log_p[..., 0], mask, num_items_in_batch)
    fus = _average(-(probs.float() * log_p[..., 1:]).sum(dim=-1), mask, num_items_in_batch)
    loss = lam * clm + (1.0 - lam) * fus
    return loss, {"clm": float(clm.detach()), "fusion": float(fus.detach())}

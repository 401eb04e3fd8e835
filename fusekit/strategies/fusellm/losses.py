"""FuseLLM's objective: ``λ·CLM + (1−λ)·fusion`` on sparse targets.

The fusion term is the cross-entropy between a sparse target distribution
(a few ids and probabilities per position) and the model's softmax:

    L_fusion = −Σ_t mask_t Σ_j q_{t,j} · log p_t(id_{t,j})  /  Σ_t mask_t

computed as ``gather(logits, ids) − logsumexp(logits)``.  The reference builds
a dense vocabulary-sized target tensor on the CPU for every batch (and
crashes when the model pads its vocabulary past the tokenizer); here the only
vocabulary-sized tensor is the model's own logits.

``mask`` marks positions that have a gold next token — the same positions the
CLM term counts — so both terms share one normaliser, and with gradient
accumulation both divide by ``num_items_in_batch`` like ``transformers``'
own causal-LM loss.  The CLM term *is* that loss (``ForCausalLMLoss``), so at
``λ = 1`` the objective equals plain CLM training bit for bit.
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


def fusion_loss(
    logits: torch.Tensor,
    target_ids: torch.Tensor,
    target_probs: torch.Tensor,
    mask: torch.Tensor,
    num_items_in_batch: Any = None,
) -> torch.Tensor:
    """Soft-target cross-entropy on sparse targets ``[B, T, k]``, averaged over ``mask``."""
    logits = logits.float()
    log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # [B, T, 1]
    log_p = logits.gather(-1, target_ids.long()) - log_norm  # [B, T, k]
    per_position = -(target_probs.float() * log_p).sum(dim=-1)  # [B, T]
    total = (per_position * mask).sum()
    if num_items_in_batch is not None:
        denom = num_items_in_batch
        if torch.is_tensor(denom):
            denom = denom.to(total.device)
        return total / denom
    return total / mask.sum().clamp(min=1)


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
    parts: dict[str, float] = {}
    loss = None
    if lam > 0.0:
        clm = clm_loss(logits, labels, num_items_in_batch)
        parts["clm"] = float(clm.detach())
        loss = clm if lam == 1.0 else lam * clm
    if lam < 1.0:
        if sparse_target is None:
            raise ValueError("lambda < 1 needs a fused target")
        ids, probs = (
            (sparse_target.ids, sparse_target.probs)
            if hasattr(sparse_target, "ids")
            else sparse_target
        )
        fus = fusion_loss(logits, ids, probs, next_token_mask(labels), num_items_in_batch)
        parts["fusion"] = float(fus.detach())
        loss = (1.0 - lam) * fus if loss is None else loss + (1.0 - lam) * fus
    assert loss is not None
    return loss, parts

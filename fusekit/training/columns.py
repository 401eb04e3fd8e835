"""The output layer where the loss looks: next-token loss from the labelled columns only.

A causal LM's output layer is most of a training step when the vocabulary is large
(Gemma-3's 262k entries against a 640-wide model), and on prompt/completion examples
or assistant turns most positions carry no label.  Running that layer only at the
columns ``t`` whose next token some row labels gives the same mean over the same
tokens; transformers' causal LMs take those columns as ``logits_to_keep``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scored_columns(labels: torch.Tensor) -> torch.Tensor | None:
    """Positions ``t`` where some row's token ``t + 1`` is labelled; None when that is
    every position (nothing to save) or none (the full loss says what it says)."""
    cols = torch.nonzero((labels[:, 1:] != -100).any(dim=0)).squeeze(1)
    return cols if 0 < len(cols) < labels.shape[1] - 1 else None


def kept_columns_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    keep: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy of ``logits`` computed at columns ``keep`` of ``labels``.

    The mean over labelled tokens, or their sum over ``num_items_in_batch`` when given
    (``Trainer``'s count over the accumulated batch, as transformers' own causal-LM
    loss divides), so gradient accumulation weighs tokens as the full loss does.
    """
    targets = labels[:, keep + 1].to(logits.device)
    flat = logits.float().reshape(-1, logits.shape[-1])
    if num_items_in_batch is None:
        return F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100)
    total = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100, reduction="sum")
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over supervised positions (labels == -100 are skipped)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=-100,
    )

"""From source top-k outputs to one sparse target distribution per target position.

Per source (``aligned_candidates``): at every target position that the
alignment pairs with a source position, the source's top-k ids go through the
vocabulary map; unmapped ids and ids the target's logits cannot hold are
dropped, and so are repeats (the first, i.e. most likely, is kept).  The
distribution is ``softmax(logits / T)`` over what is left.  Positions with no
usable pair — or nothing left — fall back to a one-hot on the gold **next**
token: the distribution at position ``t`` predicts token ``t + 1``.  The
released code puts the one-hot on the *current* token ``t``; that off-by-one
is kept behind ``reference_fallback=True`` for comparison only.

Across sources (``fuse``):

* **MinCE** — per sequence, the source with the lowest cross-entropy on the
  gold text; sources are ordered with the target first when it is one of
  them, and ``argmin`` takes the first minimum, so ties go to the target.
* **AvgCE** — a weighted mixture.  The reference weights sources by
  ``softmax(exp(-CE))``: ``exp(-CE)`` lies in (0, 1], so the softmax of such
  numbers is nearly uniform (CEs of 2.0 and 3.0 nats give 0.52/0.48).  fusekit
  weights by ``softmax(-CE)`` per *target token*, i.e. proportional to each
  source's geometric-mean likelihood of the gold text (2.0 vs 3.0 nats gives
  0.73/0.27): a source twice as likely gets twice the weight.  With per-byte
  CE the exponent is scaled by the sequence's bytes per target token so that
  it still counts nats per target token.  ``avg_weighting="reference"``
  reproduces the released weights.

CE unit: per token (the reference) compares sources with different tokenizers
unfairly — a tokenizer with shorter tokens has lower per-token CE.  The
default is per UTF-8 byte of the text each source predicted.

Everything here is torch on whatever device the batch is on; nothing
vocabulary-sized is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch


@dataclass
class FusionConfig:
    """Knobs of the fused target; ``reference()`` gives the released algorithm's choices."""

    temperature: float = 1.0
    fusion: Literal["mince", "avgce"] = "mince"
    ce_unit: Literal["token", "byte"] = "byte"
    avg_weighting: Literal["likelihood", "reference"] = "likelihood"
    reference_fallback: bool = False

    @classmethod
    def reference(cls, **overrides: Any) -> FusionConfig:
        """Per-token CE and the released AvgCE weights (the off-by-one stays fixed)."""
        return cls(**{"ce_unit": "token", "avg_weighting": "reference", **overrides})


@dataclass
class SourceBatch:
    """One source's outputs for a batch, and where they sit in the target's positions."""

    topk_ids: torch.Tensor  # [B, Ls, k] source ids
    topk_logits: torch.Tensor  # [B, Ls, k]
    align: torch.Tensor  # [B, Lt] source position per target position, -1 = none
    nats: torch.Tensor  # [B] summed gold-token cross-entropy
    n_pred: torch.Tensor  # [B] predicted tokens
    n_bytes: torch.Tensor  # [B] bytes those tokens cover


@dataclass
class SparseTarget:
    """``probs[b, t, j]`` is the target probability of token ``ids[b, t, j]`` (repeats add up)."""

    ids: torch.Tensor  # [B, T, k'] int64, < logits width
    probs: torch.Tensor  # [B, T, k'] float32, rows sum to 1
    stats: dict[str, Any] = field(default_factory=dict)


def _dedupe(mapped: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``valid`` minus every candidate whose id already appeared earlier among valid ones."""
    k = mapped.shape[-1]
    same = mapped.unsqueeze(-1) == mapped.unsqueeze(-2)  # [..., i, j]
    earlier = torch.ones(k, k, dtype=torch.bool, device=mapped.device).tril(-1)
    repeat = (same & valid.unsqueeze(-2) & earlier).any(dim=-1)
    return valid & ~repeat


def aligned_candidates(
    topk_ids: torch.Tensor,
    topk_logits: torch.Tensor,
    align: torch.Tensor,
    vocab_map: torch.Tensor,
    width: int,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One source's distribution on the target's positions, before the fallback.

    Returns ``ids [B, Lt, k]`` (target ids, 0 where dropped), ``probs [B, Lt, k]``,
    ``ok [B, Lt]`` (the position is aligned and kept at least one candidate) and
    ``kept [B, Lt]`` (number of candidates kept).
    """
    k = topk_ids.shape[-1]
    where = align.clamp(min=0).unsqueeze(-1).expand(-1, -1, k)
    src_ids = topk_ids.long().gather(1, where)
    logits = topk_logits.float().gather(1, where)
    n_map = vocab_map.shape[0]
    inside = (src_ids >= 0) & (src_ids < n_map)
    mapped = torch.where(inside, vocab_map[src_ids.clamp(0, n_map - 1)], -1)
    valid = (mapped >= 0) & (mapped < width) & (align >= 0).unsqueeze(-1)
    valid = _dedupe(mapped, valid)
    ok = valid.any(dim=-1)
    scaled = torch.where(valid, logits / temperature, torch.finfo(torch.float32).min)
    probs = torch.softmax(scaled, dim=-1) * valid
    ids = torch.where(valid, mapped, 0)
    return ids, probs, ok, valid.sum(dim=-1)


def gold_fallback(
    ids: torch.Tensor,
    probs: torch.Tensor,
    ok: torch.Tensor,
    input_ids: torch.Tensor,
    reference: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace rows that are not ``ok`` by a one-hot on the next gold token (or the current one)."""
    # Fixed: position t predicts token t+1 (the last row has none and is masked anyway).
    next_ids = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], dim=1)
    gold = input_ids if reference else next_ids
    onehot_ids = torch.zeros_like(ids)
    onehot_ids[..., 0] = gold
    onehot_probs = torch.zeros_like(probs)
    onehot_probs[..., 0] = 1.0
    keep = ok.unsqueeze(-1)
    return torch.where(keep, ids, onehot_ids), torch.where(keep, probs, onehot_probs)


def sequence_ce(src: SourceBatch, unit: str) -> torch.Tensor:
    """Mean cross-entropy of each sequence, per token or per byte."""
    denom = src.n_pred if unit == "token" else src.n_bytes
    return src.nats.float() / denom.float().clamp(min=1)


def source_weights(
    ce: torch.Tensor, config: FusionConfig, bytes_per_token: torch.Tensor | None = None
) -> torch.Tensor:
    """AvgCE weights ``[S, B]`` from CEs ``[S, B]``; see the module docstring."""
    if config.avg_weighting == "reference":
        return torch.softmax(torch.exp(-ce), dim=0)
    scale = bytes_per_token if (config.ce_unit == "byte" and bytes_per_token is not None) else 1.0
    return torch.softmax(-ce * scale, dim=0)


def fuse(
    sources: list[SourceBatch],
    vocab_maps: list[torch.Tensor],
    input_ids: torch.Tensor,
    width: int,
    config: FusionConfig,
    *,
    mask: torch.Tensor | None = None,
    bytes_per_token: torch.Tensor | None = None,
) -> SparseTarget:
    """The fused sparse target for a batch of target sequences ``input_ids [B, T]``.

    ``mask [B, T]`` (positions that have a gold next token) only feeds the
    statistics; ``bytes_per_token [B]`` is the target's bytes per predicted
    token, used by the default AvgCE weighting with per-byte CE.
    """
    if not sources:
        raise ValueError("fusion needs at least one source")
    per_source = []
    aligned, kept = [], []
    stat_mask = mask if mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    stat_mask = stat_mask.bool()
    positions = stat_mask.sum().clamp(min=1)
    for src, vmap in zip(sources, vocab_maps, strict=True):
        ids, probs, ok, n_kept = aligned_candidates(
            src.topk_ids, src.topk_logits, src.align, vmap, width, config.temperature
        )
        ids, probs = gold_fallback(ids, probs, ok, input_ids, config.reference_fallback)
        per_source.append((ids, probs))
        used = ok & stat_mask
        aligned.append(float(used.sum() / positions))
        paired = ((src.align >= 0) & stat_mask).sum().clamp(min=1)
        kept.append(float((n_kept * stat_mask).sum() / (paired * src.topk_ids.shape[-1])))
    ce = torch.stack([sequence_ce(s, config.ce_unit) for s in sources])  # [S, B]
    stats: dict[str, Any] = {"aligned": aligned, "kept": kept, "ce": ce.mean(dim=1).tolist()}
    if config.fusion == "mince":
        choice = ce.argmin(dim=0)  # first minimum: ties go to the earliest (target) source
        all_ids = torch.stack([p[0] for p in per_source])  # [S, B, T, k]
        all_probs = torch.stack([p[1] for p in per_source])
        pick = torch.arange(input_ids.shape[0], device=input_ids.device)
        stats["picked"] = torch.bincount(choice, minlength=len(sources)).tolist()
        return SparseTarget(all_ids[choice, pick], all_probs[choice, pick], stats)
    if config.fusion != "avgce":
        raise ValueError(f"fusion must be 'mince' or 'avgce', got {config.fusion!r}")
    weights = source_weights(ce, config, bytes_per_token)  # [S, B]
    stats["weights"] = weights.mean(dim=1).tolist()
    ids = torch.cat([p[0] for p in per_source], dim=-1)
    probs = torch.cat(
        [p[1] * w.view(-1, 1, 1) for p, w in zip(per_source, weights, strict=True)], dim=-1
    )
    return SparseTarget(ids, probs, stats)

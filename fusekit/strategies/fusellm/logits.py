"""A source's output layer applied a slice of positions at a time.

FuseLLM needs, per position, a source's top-k logits and the log-probability of
the gold next token.  ``model(...).logits`` would build ``[rows, length, vocab]``
first: for Gemma-3's 262,144-token vocabulary a batch of 8 × 512 tokens is 4.3 GB
of fp32 logits.  Here the decoder runs once and its output layer is applied to a
few hundred positions at a time, each slice reduced to its top-k and its
log-sum-exp before the next one is made.  A slice's fp32 logits take at most
``MAX_CHUNK_BYTES``; the soft-capping of a Gemma head makes temporaries of the
slice's size, and the reduction's fp32 copies are ``REDUCE_BYTES`` each, so
memory is bounded by the slice size and never by the batch.

Only a plain projection can be sliced like that, so every model is checked once
against its own ``forward`` on a short prefix (Gemma's final soft-capping is
applied here; an architecture that transforms its logits some other way is refused
with the reason rather than fused wrongly).
"""

from __future__ import annotations

from typing import Any

import torch

from fusekit.errors import PlanError

#: The largest slice of fp32 logits made at once.
MAX_CHUNK_BYTES = 256 << 20
#: What each reduction step after the output layer works on at once.
REDUCE_BYTES = 4 << 20
_CHECK_POSITIONS = 8


def final_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    """The decoder's last hidden states ``[rows, length, width]``, without the output layer."""
    out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """What the model's ``forward`` makes of ``hidden``: the output layer, soft-capped if
    the architecture caps its logits (Gemma 2/3)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def check_slicing(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """Refuse a model whose logits are not ``head_logits`` of its hidden states (checked once)."""
    if getattr(model, "_fusekit_head_checked", False):
        return
    ids, mask = input_ids[:1, :_CHECK_POSITIONS], attention_mask[:1, :_CHECK_POSITIONS]
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        got = head_logits(model, final_hidden(model, ids, mask))
    same = got.shape == expected.shape and bool(
        torch.allclose(got.float(), expected.float(), rtol=1e-4, atol=1e-4, equal_nan=True)
    )
    if not same:
        raise PlanError(
            f"{type(model).__name__}: its logits are not its output layer applied to its last "
            "hidden states, so fusekit cannot compute them a slice at a time; this "
            "architecture is not supported as a FuseLLM source"
        )
    model._fusekit_head_checked = True


def reduce_rows(vocab: int) -> int:
    """Rows reduced at once after the output layer: about ``REDUCE_BYTES`` of fp32 logits,
    small enough to stay in a core's cache between the passes over them."""
    return max(4, REDUCE_BYTES // (4 * max(1, vocab)))


def chunk_rows(vocab: int) -> int:
    """Positions per slice so that a slice's fp32 logits stay within ``MAX_CHUNK_BYTES``."""
    return max(1, MAX_CHUNK_BYTES // (4 * max(1, vocab)))


def sliced_topk_and_nll(
    model: Any,
    hidden: torch.Tensor,
    gold: torch.Tensor,
    k: int,
    wanted: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over flat positions ``[n, width]``: top-k (values, ids) at ``wanted`` positions
    (all when None) and the gold tokens' negative log-likelihood at every position.

    The output layer runs on slices of up to ``MAX_CHUNK_BYTES`` of logits (large
    matrix products use the hardware best); everything after it works on a few rows at
    a time (``reduce_rows``), so a row's logits are read from memory once and its
    top-k, conversion to fp32 and log-sum-exp run on data in the cache.  The row
    maximum the log-sum-exp needs is the top-k's first value, and the exponentials are
    taken in place.  On a 32k vocabulary this halves the work after the output layer
    (``bench/fusellm.py``), where a source spends most of its time.
    """
    n = hidden.shape[0]
    vocab = model.get_output_embeddings().weight.shape[0]
    step = chunk_rows(vocab)
    sub = reduce_rows(vocab)
    k = min(k, vocab)
    picks = torch.arange(n, device=hidden.device) if wanted is None else wanted
    order = torch.argsort(picks, stable=True)
    ordered = picks[order]
    values: torch.Tensor | None = None  # in the logits' dtype, known at the first slice
    ids = torch.zeros(len(picks), k, dtype=torch.long, device=hidden.device)
    nll = torch.empty(n, dtype=torch.float32, device=hidden.device)
    for start in range(0, n, step):
        logits = head_logits(model, hidden[start : start + step])
        if values is None:
            values = logits.new_zeros(len(picks), k)
        for a in range(0, logits.shape[0], sub):
            block = logits[a : a + sub]
            lo, hi = start + a, start + a + block.shape[0]
            span = torch.searchsorted(ordered, torch.tensor([lo, hi], device=ordered.device))
            here = order[int(span[0]) : int(span[1])]  # the picks that fall in this block
            if 2 * len(here) >= block.shape[0]:  # most rows wanted: top-k of every row
                top = torch.topk(block, k, dim=-1)
                peak = top.values[:, :1].float()
                rows = picks[here] - lo
                values[here], ids[here] = top.values[rows], top.indices[rows]
            else:
                peak = block.amax(dim=-1, keepdim=True).float()
                if len(here):
                    top = torch.topk(block.index_select(0, picks[here] - lo), k, dim=-1)
                    values[here], ids[here] = top.values, top.indices
            full = block.float()  # a copy for a 2-byte dtype; the slice itself for fp32
            chosen = full.gather(1, gold[lo:hi, None])[:, 0]
            total = full.sub_(peak).exp_().sum(dim=-1)  # the slice is not read again
            nll[lo:hi] = peak[:, 0] + total.log() - chosen
        del logits
    if values is None:  # no position at all
        values = hidden.new_zeros(0, k)
    return values, ids, nll

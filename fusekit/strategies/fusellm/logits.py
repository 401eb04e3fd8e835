"""A source's output layer applied a slice of positions at a time.

FuseLLM needs, per position, a source's top-k logits and the log-probability of
the gold next token.  ``model(...).logits`` would build ``[rows, length, vocab]``
first: for Gemma-3's 262,144-token vocabulary a batch of 8 × 512 tokens is 4.3 GB
of fp32 logits.  Here the decoder runs once and its output layer is applied to a
few hundred positions at a time, each slice reduced to its top-k and its
log-sum-exp before the next one is made.  A slice's fp32 logits take at most
``MAX_CHUNK_BYTES``; while it is reduced, memory holds a few times that (the
output layer's own result, its fp32 copy, the soft-capping and log-sum-exp
temporaries), a bound set by the slice size and never by the batch.

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
    (all when None) and the gold tokens' negative log-likelihood at every position."""
    n = hidden.shape[0]
    vocab = model.get_output_embeddings().weight.shape[0]
    step = chunk_rows(vocab)
    k = min(k, vocab)
    picks = torch.arange(n, device=hidden.device) if wanted is None else wanted
    values: torch.Tensor | None = None  # in the logits' dtype, known at the first slice
    ids = torch.zeros(len(picks), k, dtype=torch.long, device=hidden.device)
    nll = torch.empty(n, dtype=torch.float32, device=hidden.device)
    for start in range(0, n, step):
        logits = head_logits(model, hidden[start : start + step])
        stop = start + logits.shape[0]
        full = logits.float()
        nll[start:stop] = torch.logsumexp(full, -1) - full.gather(1, gold[start:stop, None])[:, 0]
        here = torch.nonzero((picks >= start) & (picks < stop), as_tuple=True)[0]
        if values is None:
            values = logits.new_zeros(len(picks), k)
        if len(here):
            top = torch.topk(logits.index_select(0, picks[here] - start), k, dim=-1)
            values[here] = top.values
            ids[here] = top.indices
        del logits, full
    if values is None:  # no position at all
        values = hidden.new_zeros(0, k)
    return values, ids, nll

"""Cross-attention masks: which augment positions each anchor position may read.

Every position of every model gets an integer *key* saying how far into the text
it reaches, plus a *valid* flag (padding and injected specials are invalid).
Anchor position t may read augment position s when

* ``causal``   — ``key[s] <= key[t]``: the augment token ends no later than the
  anchor token, so nothing from the anchor's future leaks in (teacher-forced
  training without this mask leaks the answer);
* ``diagonal`` — the latest such augment position(s) only: with a shared
  tokenizer this is "anchor t reads augment t".

Keys are token positions when both models share a tokenizer (with left padding
these are ``cumsum(mask) - 1``, identical for both models) and character *end
offsets* when they do not (each model tokenises the same text itself; anchor
token t may read augment tokens whose text ends at or before the end of token
t's text).  A query row that can read nothing gets no cross-attention at all
(its contribution is exactly zero), never a softmax over masked scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

MaskKind = Literal["causal", "diagonal"]
MASK_KINDS: tuple[str, ...] = ("causal", "diagonal")


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: ``cumsum(mask) - 1``, clamped at 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def token_keys(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and validity for a model that shares the anchor's tokens."""
    return positions_from_mask(attention_mask), attention_mask.bool()


def offset_keys(ends: Sequence[int], *, is_augment: bool) -> tuple[list[int], list[bool]]:
    """Character keys for one tokenised text, from each token's raw end offset.

    A key is the running maximum of the ends, so special tokens (offsets
    ``(0, 0)``) inherit the end of the text before them: a leading BOS has key
    0 and an anchor EOS reaches the end of the text.  On the augment side a
    zero-width token *after* real text (an appended EOS, the second byte-piece
    of one character) is made invalid: its state depends on text its key does
    not admit to, which would leak to anchor tokens with the same key.
    """
    keys: list[int] = []
    valid: list[bool] = []
    running = 0
    seen_text = False
    for end in ends:
        zero_width = int(end) <= running
        running = max(running, int(end))
        keys.append(running)
        valid.append(not (is_augment and zero_width and seen_text))
        seen_text = seen_text or not zero_width
    return keys, valid


def cross_mask(
    q_keys: torch.Tensor,
    q_valid: torch.Tensor,
    kv_keys: torch.Tensor,
    kv_valid: torch.Tensor,
    kind: str = "causal",
) -> torch.Tensor:
    """Boolean ``[B, T_q, S]``: True where anchor query t may read augment position s."""
    if kind not in MASK_KINDS:
        raise ValueError(f"mask kind {kind!r} is not one of {MASK_KINDS}")
    q = q_keys[:, :, None]
    kv = kv_keys[:, None, :]
    visible = (kv <= q) & kv_valid[:, None, :].bool() & q_valid[:, :, None].bool()
    if kind == "diagonal":
        lowest = torch.iinfo(kv_keys.dtype).min
        latest = kv.expand_as(visible).masked_fill(~visible, lowest).amax(-1, keepdim=True)
        visible = visible & (kv == latest)
    return visible


def prompt_mask_from_labels(labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions before the first supervised token: the prompt of a prompt/completion example.

    Used by ``augment_mode="encoder"``, where the augment model may read the
    prompt only.  Running a causal augment on the full text and then hiding
    every non-prompt position equals running it on the prompt alone.
    """
    # HF convention: labels[t] is token t itself on completion tokens (the loss
    # shifts internally), so the prompt is everything before the first label.
    supervised = (labels != -100).long().cumsum(-1)
    return (supervised == 0) & attention_mask.bool()

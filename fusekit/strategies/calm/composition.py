"""Θ_C: the trainable modules of a composition, and the cross-attention memory.

Per layer pair (augment layer i → anchor layer j)::

    mem  = proj(H_A,i)                       # Linear D_A -> D_B
    H_B,j ← H_B,j + o(attn(q(norm(H_B,j)), k(mem), v(mem), mask))

``o`` starts at zero, so at initialisation the composed model *is* the anchor
(max |Δlogits| == 0), and training starts from the anchor's own behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fusekit.strategies.calm.config import CompositionConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (as Llama does)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class CrossBlock(nn.Module):
    """One layer pair: projection, query pre-norm, multi-head cross-attention, zero-init output."""

    def __init__(
        self,
        d_augment: int,
        d_anchor: int,
        heads: int,
        *,
        kv_norm: bool = False,
        scale_output: bool = False,
        null_key: bool = False,
        diagonal: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.diagonal = diagonal
        self.scale_output = scale_output
        self.eps = eps
        self.head_dim = d_anchor // heads
        self.kv_norm: nn.Module = RMSNorm(d_augment, eps) if kv_norm else nn.Identity()
        self.proj = nn.Linear(d_augment, d_anchor, bias=False)
        self.norm = RMSNorm(d_anchor, eps)
        self.q_proj = nn.Linear(d_anchor, d_anchor, bias=False)
        self.k_proj = nn.Linear(d_anchor, d_anchor, bias=False)
        self.v_proj = nn.Linear(d_anchor, d_anchor, bias=False)
        self.o_proj = nn.Linear(d_anchor, d_anchor, bias=False)
        nn.init.zeros_(self.o_proj.weight)
        # A learnable key whose value is zero: attending to it means "add nothing here".
        # With a diagonal mask (one visible position) it is the only way for the block to
        # gate by token type — without it the update is linear in the augment's state.
        self.null_key = nn.Parameter(torch.zeros(heads, self.head_dim)) if null_key else None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def memory(self, h_augment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, heads, S, head_dim]`` from augment states ``[B, S, D_A]``."""
        dtype = self.proj.weight.dtype
        mem = self.proj(self.kv_norm(h_augment.to(dtype)))
        return self._split(self.k_proj(mem)), self._split(self.v_proj(mem))

    def forward(
        self, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor
    ) -> torch.Tensor:
        """The residual update for anchor states ``h`` ``[B, T, D_B]``; ``visible`` is ``[B, T, S]``."""
        dtype = self.q_proj.weight.dtype
        q = self._split(self.q_proj(self.norm(h.to(dtype))))
        if self.diagonal and not bool((visible.sum(-1) > 1).any()):
            out = self._attend_one(q, k, v, visible)
        else:
            out = self._attend(q, k, v, visible)
        out = self.o_proj(out.transpose(1, 2).reshape(h.shape[0], h.shape[1], -1))
        if self.scale_output:
            # Relative update: the anchor's stream is ~1 at the embeddings and ~100s deep
            # inside; scaling by its RMS gives every pair the same effective step size.
            out = out * h.detach().float().pow(2).mean(-1, keepdim=True).add(self.eps).sqrt()
        return out.to(h.dtype)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor
    ) -> torch.Tensor:
        """Masked multi-head attention over the whole memory (any mask)."""
        dtype = q.dtype
        bias = torch.zeros(visible.shape, dtype=dtype, device=q.device)
        bias = bias.masked_fill(~visible, torch.finfo(dtype).min)[:, None]
        if self.null_key is not None:
            b = k.shape[0]
            k = torch.cat([self.null_key[None, :, None].expand(b, -1, 1, -1), k], 2)
            v = torch.cat([v.new_zeros(b, v.shape[1], 1, v.shape[3]), v], 2)
            bias = torch.cat([bias.new_zeros(*bias.shape[:3], 1).expand(b, -1, -1, -1), bias], -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        # rows that may read nothing (padding, BOS before any augment text) add nothing
        return out * visible.any(-1)[:, None, :, None].to(dtype)

    def _attend_one(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor
    ) -> torch.Tensor:
        """The same attention when each row sees at most one memory position (diagonal mask).

        Softmax over {null key, that one key} is a sigmoid of the score difference
        and without a null key the weight is 1, so nothing ``[T, S]``-sized is
        built: with one head per channel this is several times faster to train.
        """
        index = visible.to(torch.uint8).argmax(-1)  # [B, T]: the visible position (or 0)
        seen = visible.any(-1)[:, None, :, None].to(q.dtype)  # [B, 1, T, 1]
        gather = index[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        k_t, v_t = k.gather(2, gather), v.gather(2, gather)  # [B, H, T, hd]
        if self.null_key is None:
            return v_t * seen
        scale = self.head_dim**-0.5
        score = (q * (k_t - self.null_key[None, :, None])).sum(-1, keepdim=True) * scale
        return v_t * torch.sigmoid(score) * seen


class Composition(nn.Module):
    """Θ_C: ``blocks[k][p]`` is the cross block of augment k's p-th layer pair."""

    def __init__(self, config: CompositionConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                CrossBlock(
                    a.hidden_size,
                    config.anchor_hidden_size,
                    config.heads,
                    kv_norm=config.kv_norm,
                    scale_output=config.scale_output,
                    null_key=config.null_key,
                    diagonal=config.mask == "diagonal",
                    eps=config.eps,
                )
                for _ in a.pairs
            )
            for a in config.augments
        )

    def pair_blocks(self, k: int) -> list[CrossBlock]:
        """``blocks[k]``, typed: torch's ``ModuleList`` holds plain ``Module``s."""
        group = self.blocks[k]
        assert isinstance(group, nn.ModuleList)
        return [block for block in group if isinstance(block, CrossBlock)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class Memory:
    """One augment model's cross-attention memory: per-pair K/V plus keys and validity.

    Grows by the new augment positions at every decoding step; ``crop`` drops a
    suffix when a different-tokenizer augment re-tokenises its tail.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    keys: torch.Tensor  # [B, S] long
    valid: torch.Tensor  # [B, S] bool

    def append(self, other: Memory) -> Memory:
        return Memory(
            kv=[
                (torch.cat([k, k2], 2), torch.cat([v, v2], 2))
                for (k, v), (k2, v2) in zip(self.kv, other.kv, strict=True)
            ],
            keys=torch.cat([self.keys, other.keys], 1),
            valid=torch.cat([self.valid, other.valid], 1),
        )

    def crop(self, length: int) -> Memory:
        return Memory(
            kv=[(k[:, :, :length], v[:, :, :length]) for k, v in self.kv],
            keys=self.keys[:, :length],
            valid=self.valid[:, :length],
        )

    @property
    def length(self) -> int:
        return int(self.keys.shape[1])

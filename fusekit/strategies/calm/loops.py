"""Plain torch training loops for tiny models, and the example pool they sample from.

On a CPU, for models of a million parameters, per-step overhead is a real share
of the time; these loops do nothing but sample, step and log.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch


class Pool:
    """Tokenised prompt/completion examples as padded tensors, sampled with replacement."""

    def __init__(self, tokenizer: Any, records: list[dict[str, str]], seq_len: int = 24) -> None:
        from fusekit.training.data import encode_prompt_completion

        pairs = [
            encode_prompt_completion(tokenizer, r["prompt"], r["completion"], seq_len)
            for r in records
        ]
        width = max(len(ids) for ids, _ in pairs)
        pad = tokenizer.pad_token_id
        self.ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in pairs])
        self.labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in pairs])
        self.mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in pairs])

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, len(self), (n,), generator=gen)
        width = int(self.mask[idx].sum(1).max())
        return {
            "input_ids": self.ids[idx, :width],
            "labels": self.labels[idx, :width],
            "attention_mask": self.mask[idx, :width],
        }


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_loop(
    model: Any,
    params: list[torch.nn.Parameter],
    pool: Pool,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    label: str,
    log_every: int = 100,
    weight_decay: float = 0.0,
) -> list[list[float]]:
    """AdamW with warm-up and cosine decay; returns ``[step, loss]`` every ``log_every`` steps."""
    from fusekit.strategies.calm.modeling import causal_lm_loss

    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    warmup = max(1, steps // 20)
    history: list[list[float]] = []
    running, start = 0.0, time.perf_counter()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        batch = pool.sample(batch_size, gen)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = out["logits"] if isinstance(out, dict) else out.logits
        loss = causal_lm_loss(logits, batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        running += loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            history.append([step + 1, round(running / n, 4)])
            rate = (step + 1) / (time.perf_counter() - start)
            print(
                f"  {label} step {step + 1}/{steps} loss {running / n:.4f} ({rate:.1f} steps/s)",
                file=sys.stderr,
                flush=True,
            )
            running = 0.0
    model.eval()
    return history

"""``FuseLLMTrainer``: the shared trainer with FuseLLM's loss.

Everything scientific lives in pure functions (``fusion.fuse``,
``losses.fused_objective``); this class only wires them into
``transformers.Trainer.compute_loss`` — so checkpoints, resume, gradient
accumulation, mixed precision and ``accelerate launch`` come for free.

Offline batches carry the sources' stored top-k rows; online batches carry the
sources' token ids and the trainer runs the (frozen, eval-mode) source models
under ``no_grad`` inside the step.  Either way the fused target is built on the
training device from the same tensors.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from fusekit.strategies.fusellm.extract import source_outputs
from fusekit.strategies.fusellm.fusion import FusionConfig, SourceBatch, fuse
from fusekit.strategies.fusellm.losses import fused_objective, next_token_mask
from fusekit.training.trainer import FusekitTrainer


class FuseLLMTrainer(FusekitTrainer):
    """Continual training on ``lam·CLM + (1−lam)·fusion``.

    ``vocab_maps[s]`` maps source ``s``'s ids to target ids (``-1`` = none);
    ``source_models`` is given in online mode (one per source, same order).
    """

    def __init__(
        self,
        *args: Any,
        lam: float,
        fusion_config: FusionConfig,
        vocab_maps: list[np.ndarray],
        top_k: int,
        source_models: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lam = float(lam)
        self.fusion_config = fusion_config
        self.top_k = int(top_k)
        device = self.args.device
        self.vocab_maps = [
            torch.as_tensor(np.asarray(v), dtype=torch.long).to(device) for v in vocab_maps
        ]
        self.source_models = source_models
        if source_models is not None:
            for m in source_models:
                m.to(device).eval().requires_grad_(False)
        self._window: dict[str, list[float]] = defaultdict(list)
        self.fusion_totals: dict[str, Any] = {"batches": 0}

    def _source_batches(self, sources: list[dict[str, torch.Tensor]]) -> list[SourceBatch]:
        out = []
        for s, src in enumerate(sources):
            align = src["align"]
            if "topk_ids" in src:
                fields = src
            else:
                if self.source_models is None:
                    raise ValueError("online batches need source models")
                # Top-k only where the alignment looks: row t of the result belongs to
                # target position t, so the alignment becomes the identity where it exists.
                fields = source_outputs(
                    self.source_models[s],
                    src["input_ids"],
                    src["attention_mask"],
                    self.top_k,
                    positions=align,
                    counted=src.get("counted"),
                )
                here = torch.arange(align.shape[1], device=align.device).expand_as(align)
                align = torch.where(align >= 0, here, -1)
            out.append(
                SourceBatch(
                    topk_ids=fields["topk_ids"],
                    topk_logits=fields["topk_logits"],
                    align=align,
                    nats=fields["nats"],
                    n_pred=fields["n_pred"],
                    n_bytes=src["n_bytes"],
                )
            )
        return out

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        sources = inputs.pop("sources")
        bytes_per_token = inputs.pop("bytes_per_token")
        labels = inputs.pop("labels")
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = outputs.logits
        target = None
        if self.lam < 1.0:
            target = fuse(
                self._source_batches(sources),
                self.vocab_maps,
                inputs["input_ids"],
                logits.shape[-1],
                self.fusion_config,
                mask=next_token_mask(labels),
                bytes_per_token=bytes_per_token,
            )
            self._record(target.stats)
        loss, parts = fused_objective(logits, labels, target, self.lam, num_items_in_batch)
        for name, value in parts.items():
            self._window[name].append(value)
        if (
            getattr(self.args, "average_tokens_across_devices", False)
            and num_items_in_batch is not None
            and self.accelerator.num_processes > 1
        ):
            loss = (
                loss * self.accelerator.num_processes
            )  # as Trainer does for token-averaged losses
        return (loss, outputs) if return_outputs else loss

    def _record(self, stats: dict[str, Any]) -> None:
        totals = self.fusion_totals
        totals["batches"] += 1
        for name in ("aligned", "kept", "ce", "weights"):
            if name in stats:
                for s, value in enumerate(stats[name]):
                    self._window[f"{name}_{s}"].append(float(value))
                    totals.setdefault(name, [0.0] * len(stats[name]))[s] += float(value)
        if "picked" in stats:
            picked = totals.setdefault("picked", [0] * len(stats["picked"]))
            for s, n in enumerate(stats["picked"]):
                picked[s] += int(n)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            for name, values in self._window.items():
                if values:
                    logs[name] = round(sum(values) / len(values), 4)
            self._window.clear()
        super().log(logs, *args, **kwargs)

    def fusion_summary(self) -> dict[str, Any]:
        """Mean alignment/keep shares, CEs and MinCE picks over the whole run."""
        totals = self.fusion_totals
        n = max(1, totals["batches"])
        out: dict[str, Any] = {"batches": totals["batches"]}
        for name in ("aligned", "kept", "ce", "weights"):
            if name in totals:
                out[name] = [round(v / n, 4) for v in totals[name]]
        if "picked" in totals:
            out["picked"] = totals["picked"]
        return out

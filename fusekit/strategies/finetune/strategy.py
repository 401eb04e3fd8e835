"""``finetune``: continued training of one model, fully or through merged LoRA adapters.

Not a fusion technique: it is the baseline the papers compare against (CLM-only
continual training for FuseLLM, full fine-tuning and LoRA for LLaMA Pro and CALM),
run through the same trainer, data and budget so comparisons are fair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fusekit.strategies.base import Strategy


class FinetuneStrategy(Strategy):
    tag: ClassVar[str] = "finetune"

    def plan(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "method": "lora" if r.lora is not None else "full",
            "lora": r.lora.model_dump() if r.lora is not None else None,
            "steps": r.train.steps,
            "lr": r.train.lr,
        }

    def run(self, workdir: Path) -> dict[str, Any]:
        from fusekit.sources import resolve_model
        from fusekit.training.run import train_causal_lm

        r = self.recipe
        folder = resolve_model(r.model)
        summary = train_causal_lm(
            folder,
            r.train_data(),
            r.train,
            workdir,
            checkpoint_dir=self.checkpoints(workdir),
            lora=r.lora.peft_kwargs() if r.lora is not None else None,
        )
        if not summary.get("trained"):  # steps: 0 -> the output is the input, copied
            import shutil

            for path in folder.iterdir():
                if path.is_file() and path.name not in ("fusekit.json", "README.md"):
                    shutil.copy2(path, workdir / path.name)
        return {"inputs": {"model": folder}, "training": summary}

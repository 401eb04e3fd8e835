"""``finetune``: continued training of one model, fully or through merged LoRA adapters.

Not a fusion technique: it is the baseline the papers compare against (CLM-only
continual training for FuseLLM, full fine-tuning and LoRA for LLaMA Pro and CALM),
run through the same pipeline, data and budget so comparisons are fair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fusekit.estimates import load_bytes, lora_parameters, model_facts, training_memory
from fusekit.models.resolve import model_input
from fusekit.recipe.common import own_load
from fusekit.strategies.base import Built, Prepared, Strategy
from fusekit.strategies.finetune.recipe import FinetuneRecipe
from fusekit.training.unit import causal_lm_unit


class FinetuneStrategy(Strategy[FinetuneRecipe]):
    tag: ClassVar[str] = "finetune"
    takes_streaming: ClassVar[bool] = True

    def plan(self) -> dict[str, Any]:

        r = self.recipe
        model = model_facts(r.model)
        lora = r.lora.peft_kwargs() if r.lora is not None else None
        trainable = lora_parameters(r.model, lora) if lora is not None else model.parameters
        load = r.model_load(own_load(r.model))
        held = load_bytes(load.dtype, model)
        memory = training_memory(
            held=[(model, held)], trainable=trainable, backprop=[model], forward_only=[],
            train=r.train, attention=load.attn_implementation,
            trained_bytes=held if lora is None else 4,  # peft keeps adapters in fp32
        )  # fmt: skip
        return {
            "method": "lora" if r.lora is not None else "full",
            "lora": r.lora.model_dump() if r.lora is not None else None,
            "steps": r.train.steps,
            "lr": r.train.lr,
            "models": {"model": model.as_dict()},
            "trainable_parameters": trainable,
            "disk_bytes": model.parameters * model.disk_bytes_per_parameter,
            "training_memory_bytes": memory,
        }

    def prepare(self, workdir: Path) -> Prepared:
        return Prepared(inputs={"model": model_input(self.recipe.model)}, plan=self.plan())

    def units(self, prepared: Prepared) -> list[str]:
        return [self.main_unit]  # steps: 0 still saves the model, unchanged

    def build(self, prepared: Prepared, unit: str) -> Built:

        r = self.recipe
        source = prepared.inputs["model"]
        return causal_lm_unit(
            source.path,
            r.train_data(),
            r.train,
            lora=r.lora.peft_kwargs() if r.lora is not None else None,
            allow_pickle=source.allow_pickle,
            trust_remote_code=source.trust_remote_code,
            **r.model_load(source.load).loader_kwargs(),
        )

"""What a run would do (``--dry-run``), from configs alone: reads no weights, writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit.estimates import device_memory, memory_advice, sharded, sharding_kind
from fusekit.pipeline.checks import checked
from fusekit.pipeline.distributed import check_accelerate_config, check_sharding
from fusekit.pipeline.run import RecipeSource, as_recipe


def plan(
    recipe: RecipeSource,
    overrides: list[str] | None = None,
    accelerate_config: str | Path | None = None,
) -> dict[str, Any]:
    """What ``run`` would do (``--dry-run``): reads no weights, writes nothing.

    A training step's memory is per process: sharded as ``accelerate_config`` says
    (FSDP, ZeRO), compared with the device a process trains on (the GPU, else RAM),
    and, when over it, with the settings that would bring it under.
    """
    config = check_accelerate_config(accelerate_config) if accelerate_config else None
    recipe, strategy = checked(as_recipe(recipe, overrides))
    if config is not None:
        check_sharding(config, recipe)
    plan = {"strategy": recipe.strategy, **strategy.plan()}
    memory = plan.get("training_memory_bytes")
    if memory is not None:
        settings = config.settings if config is not None else {}
        if config is not None:
            memory = plan["training_memory_bytes"] = sharded(memory, settings)
        name, capacity = device_memory()
        plan["memory_device"] = {"name": name, "bytes": capacity}
        if memory["total"] > capacity:
            fsdp = sharding_kind(settings) in ("FSDP", "DEEPSPEED")
            plan["memory_advice"] = memory_advice(memory, capacity, sharded_already=fsdp)
    t = recipe.train
    if strategy.has_training() and t is not None:
        plan["train"] = {
            "steps": t.steps, "epochs": t.epochs, "batch_size": t.batch_size,
            "grad_accum": t.grad_accum, "seq_len": t.seq_len, "lr": t.lr,
            "precision": t.precision,
        }  # fmt: skip
    return plan

"""LLaMA Pro block expansion as a fusekit strategy: expand, then train the new layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fusekit.io.arch import arch_facts
from fusekit.io.config import load_config
from fusekit.io.refs import local_settings, peek_model, resolve_model
from fusekit.io.writer import DEFAULT_SHARD_BYTES
from fusekit.strategies.base import Strategy
from fusekit.strategies.block_expansion.freeze import new_layer_param_filter
from fusekit.strategies.block_expansion.plan import ExpansionPlan, expansion_plan
from fusekit.strategies.block_expansion.surgery import expand, expansion_describe
from fusekit.strategies.depth_upscaling.strategy import train_after_surgery


class BlockExpansionStrategy(Strategy):
    """``groups`` × ``blocks_per_group`` (or ``positions``); ``zero`` picks the identity trick."""

    tag: ClassVar[str] = "block_expansion"

    def _layout(self, *, materialize: bool) -> tuple[Path, dict[str, Any], ExpansionPlan] | None:
        r = self.recipe
        folder = (resolve_model if materialize else peek_model)(r.model)
        if folder is None:
            return None
        config = load_config(folder, trust_remote_code=local_settings(r.model)["trust_remote_code"])
        n = arch_facts(config).num_layers(config)
        plan = expansion_plan(
            n,
            getattr(r, "groups", None),
            getattr(r, "blocks_per_group", 1) or 1,
            getattr(r, "positions", None),
        )
        return folder, config, plan

    def _options(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "zero": getattr(r, "zero", "auto") or "auto",
            "dtype": getattr(r, "dtype", None),
            "max_shard_bytes": getattr(r, "shard_size", None) or DEFAULT_SHARD_BYTES,
        }

    def plan(self) -> dict[str, Any]:
        layout = self._layout(materialize=False)
        if layout is None:
            return {"note": "a from-scratch model is trained on the first run; sizes follow then"}
        folder, config, plan = layout
        return expansion_describe(folder, plan, config=config, **self._options())

    def input_paths(self) -> list[Path]:
        layout = self._layout(materialize=False)
        return [layout[0]] if layout else []

    def run(self, workdir: Path) -> dict[str, Any]:
        layout = self._layout(materialize=True)
        assert layout is not None
        folder, config, plan = layout
        summary = expand(folder, plan, Path(workdir), config=config, **self._options())
        facts = arch_facts(config)
        only_new = getattr(self.recipe, "trainable", "new") != "all"
        trainable = new_layer_param_filter(plan.new_layers, facts) if only_new else None
        training = train_after_surgery(
            self.recipe,
            Path(workdir),
            trainable=trainable,
            checkpoints=self.checkpoints(Path(workdir)),
        )
        result: dict[str, Any] = {
            "layers_before": plan.layers_before,
            "layers_after": plan.layers_after,
            "layer_map": summary["layer_map"],
            "zero": summary["zero"],
            "trainable_layers": list(plan.new_layers),
            "parameters_after": summary["parameters_after"],
            "inputs": {"model": folder},
            "plan": {k: v for k, v in summary.items() if k != "shards"},
        }
        if training is not None:
            result["training"] = training
        return result

"""LLaMA Pro block expansion as a fusekit strategy: expand, then train the new layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fusekit.estimates import model_facts
from fusekit.io.arch import arch_facts
from fusekit.io.sizes import DEFAULT_SHARD_BYTES
from fusekit.models.resolve import model_input, peek_model, trusts_remote_code
from fusekit.strategies.base import Built, Prepared
from fusekit.strategies.block_expansion.freeze import new_layer_param_filter
from fusekit.strategies.block_expansion.plan import ExpansionPlan, expansion_plan
from fusekit.strategies.block_expansion.recipe import BlockExpansionRecipe
from fusekit.strategies.block_expansion.surgery import expand, expansion_describe
from fusekit.strategies.depth_upscaling.plan import LayerSource
from fusekit.strategies.surgery import SurgeryStrategy
from fusekit.surgery.config import load_config


class BlockExpansionStrategy(SurgeryStrategy[BlockExpansionRecipe]):
    """``groups`` × ``blocks_per_group`` (or ``positions``); ``zero`` picks the identity trick."""

    tag: ClassVar[str] = "block_expansion"

    def _layout(self, folder: Path) -> tuple[dict[str, Any], ExpansionPlan]:
        r = self.recipe
        config = load_config(folder, trust_remote_code=trusts_remote_code(r.model))
        n = arch_facts(config).num_layers(config)
        plan = expansion_plan(n, r.groups, r.blocks_per_group or 1, r.positions)
        return config, plan

    def _options(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "zero": r.zero or "auto",
            "dtype": r.dtype,
            "max_shard_bytes": r.shard_size or DEFAULT_SHARD_BYTES,
        }

    def plan(self) -> dict[str, Any]:
        r = self.recipe
        parent = model_facts(r.model)
        folder = peek_model(r.model)
        if folder is None:
            plan = expansion_plan(parent.layers, r.groups, r.blocks_per_group or 1, r.positions)
            layers = [LayerSource(parent.name, i) for i in plan.sources]
            described = self.scratch_described(parent, layers, plan.new_layers)
            described["new_layers"] = list(plan.new_layers)
        else:
            config, plan = self._layout(folder)
            described = expansion_describe(folder, plan, config=config, **self._options())
        new = len(plan.new_layers) * parent.layer_parameters
        if r.trainable == "new":  # the old blocks pass gradients on and train nothing
            frozen = described["layers_after"] - len(plan.new_layers)
            return self.with_estimates(described, parent, new, r.model, frozen)
        return self.with_estimates(described, parent, described["parameters_after"], r.model)

    def prepare(self, workdir: Path) -> Prepared:
        self.check_training_data()
        source = model_input(self.recipe.model)
        folder = Path(source.path)
        config, plan = self._layout(folder)
        summary = expand(folder, plan, Path(workdir), config=config, **self._options())
        details = {
            "layers_before": plan.layers_before,
            "layers_after": plan.layers_after,
            "layer_map": summary["layer_map"],
            "zero": summary["zero"],
            "trainable_layers": list(plan.new_layers),
            "parameters_after": summary["parameters_after"],
        }
        return Prepared(
            inputs={"model": source},
            plan={k: v for k, v in summary.items() if k != "shards"},
            state={"folder": str(workdir), "details": details},
        )

    def freeze_mask(self, prepared: Prepared) -> Any:
        if self.recipe.trainable == "all":
            return None
        config = load_config(Path(prepared.inputs["model"].path))
        layers = prepared.state["details"]["trainable_layers"]
        return new_layer_param_filter(layers, arch_facts(config))

    def build(self, prepared: Prepared, unit: str) -> Built:
        """The shared causal-LM unit; zeroed post-norm gains get their own learning rate."""
        built = super().build(prepared, unit)
        scale = float(self.recipe.gain_lr_scale)
        if prepared.state["details"]["zero"] != "post_norm" or scale == 1.0:
            return built
        facts = arch_facts(load_config(Path(prepared.inputs["model"].path)))
        is_new = new_layer_param_filter(prepared.state["details"]["trainable_layers"], facts)
        gains = tuple(facts.post_norm_gains)

        def lr_scale(name: str) -> float:
            return scale if is_new(name) and name.endswith(gains) else 1.0

        built.trainer_kwargs = {**built.trainer_kwargs, "lr_scale": lr_scale}
        return built

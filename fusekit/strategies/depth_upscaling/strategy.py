"""SOLAR depth up-scaling as a fusekit strategy: splice, then (optionally) train everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fusekit.estimates import model_facts
from fusekit.io.arch import arch_facts
from fusekit.io.sizes import DEFAULT_SHARD_BYTES
from fusekit.models.resolve import model_input, peek_model, trusts_remote_code
from fusekit.recipe.common import ModelRef, own_load
from fusekit.strategies.base import ModelInput, Prepared
from fusekit.strategies.depth_upscaling.plan import LayerSource, slices_plan, solar_plan
from fusekit.strategies.depth_upscaling.recipe import DepthUpscalingRecipe
from fusekit.strategies.depth_upscaling.splice import load_configs, splice, splice_plan
from fusekit.strategies.surgery import SurgeryStrategy
from fusekit.surgery.config import load_config


class DepthUpscalingStrategy(SurgeryStrategy[DepthUpscalingRecipe]):
    """``remove: m`` (SOLAR) or mergekit-style ``slices``; non-layer tensors come from
    ``model`` when given, else from the first slice's model."""

    tag: ClassVar[str] = "depth_upscaling"

    def _layout(
        self, *, materialize: bool
    ) -> tuple[list[LayerSource], dict[str, Path], str, dict[str, Any]] | None:
        """(plan, key -> folder, base key, key -> config); None if a model is untrained."""
        r = self.recipe
        resolve = _materialized if materialize else peek_model
        folders: dict[str, Path] = {}
        refs: dict[str, ModelRef] = {}
        missing: list[ModelRef] = []

        def key(ref: ModelRef) -> str:
            folder = resolve(ref)
            if folder is None:
                missing.append(ref)
                return repr(ref)
            folders.setdefault(str(folder), folder)
            refs.setdefault(str(folder), ref)
            return str(folder)

        if r.remove is not None:
            assert r.model is not None  # the recipe's validator: remove needs model
            base = key(r.model)
            if missing:
                return None
            cfg = load_config(folders[base], **_remote(r.model))
            layers = solar_plan(arch_facts(cfg).num_layers(cfg), r.remove, base)
        else:
            layers = slices_plan(r.slices, r.model, key=key)
            base = key(r.model) if r.model is not None else layers[0].model
        if missing:
            return None
        trust = any(_remote(ref)["trust_remote_code"] for ref in refs.values())
        return layers, folders, base, load_configs(folders, trust_remote_code=trust)

    def _shard_size(self) -> int | str:
        return self.recipe.shard_size or DEFAULT_SHARD_BYTES

    def plan(self) -> dict[str, Any]:
        r = self.recipe
        parent = model_facts(self._base_ref())
        layout = self._layout(materialize=False)
        if layout is None:
            # an untrained from-scratch parent: the plan follows from its config
            if r.remove is not None:
                layers = solar_plan(parent.layers, r.remove, parent.name)
            else:
                layers = slices_plan(r.slices, r.model, key=lambda ref: parent.name)
            described = self.scratch_described(parent, layers)
        else:
            layers, folders, base, configs = layout
            described = splice_plan(
                folders,
                layers,
                base=base,
                dtype=r.dtype,
                max_shard_bytes=self._shard_size(),
                configs=configs,
            )
        return self.with_estimates(
            described, parent, described["parameters_after"], self._base_ref()
        )

    def prepare(self, workdir: Path) -> Prepared:
        self.check_training_data()
        layout = self._layout(materialize=True)
        assert layout is not None
        layers, folders, base, configs = layout
        summary = splice(
            folders,
            layers,
            Path(workdir),
            base=base,
            dtype=self.recipe.dtype,
            max_shard_bytes=self._shard_size(),
            configs=configs,
        )
        details = {
            "layers_before": summary["layers_before"],
            "layers_after": summary["layers_after"],
            "layer_map": summary["layer_map"],
            "parameters_after": summary["parameters_after"],
        }
        trust = self._trust()
        base_load = own_load(self._base_ref())  # the spliced output trains with its settings
        inputs = {
            ("model" if k == base else k): ModelInput(
                path=str(v), trust_remote_code=trust, load=base_load if k == base else None
            )
            for k, v in folders.items()
        }
        return Prepared(
            inputs=inputs,
            plan={k: v for k, v in summary.items() if k != "shards"},
            state={"folder": str(workdir), "details": details},
        )

    def _base_ref(self) -> ModelRef:
        """The reference the output's non-layer tensors come from (see ``_layout``)."""
        r = self.recipe
        if r.model is not None:
            return r.model
        # the recipe's validator: without a top-level model, slices name theirs
        assert r.slices is not None and r.slices[0].sources[0].model is not None
        return r.slices[0].sources[0].model

    def _trust(self) -> bool:
        r = self.recipe
        refs = [r.model] if r.model is not None else []
        refs += [s.sources[0].model for s in r.slices or [] if s.sources[0].model is not None]
        return any(_remote(ref)["trust_remote_code"] for ref in refs)


def _materialized(ref: ModelRef) -> Path:
    """The folder surgery reads: trained if from scratch, converted if pickled."""
    return Path(model_input(ref).path)


def _remote(ref: ModelRef) -> dict[str, bool]:
    return {"trust_remote_code": trusts_remote_code(ref)}

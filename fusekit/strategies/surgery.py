"""What the two surgery strategies share: the surgery writes the output, training follows.

``prepare`` (the strategy's own) writes the spliced or expanded model straight
into the output folder; when the recipe trains, the one ``build`` here loads that
folder back as a causal-LM unit, with the strategy's freeze mask, and the
default ``save`` writes the trained weights over the untrained ones.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, TypeVar

from fusekit.errors import DataError
from fusekit.estimates import ModelFacts, load_bytes, training_memory
from fusekit.recipe.common import ModelRef, SurgeryRecipe, own_load
from fusekit.result import StageResult, TrainingRecord
from fusekit.strategies.base import Built, Prepared, Strategy
from fusekit.surgery.restack import compact_layer_map
from fusekit.training.unit import causal_lm_unit

S = TypeVar("S", bound=SurgeryRecipe)


class SurgeryStrategy(Strategy[S]):
    """Base of ``depth_upscaling`` and ``block_expansion``."""

    takes_streaming: ClassVar[bool] = True

    def needs_tokenizer(self) -> bool:
        """A surgery alone copies whatever tokenizer files there are; training and
        scoring need one."""
        return self.has_training() or bool(self.recipe.eval_data())

    def check_training_data(self) -> None:
        """Refuse a training section without data before any surgery is done."""
        if self.has_training() and self.recipe.train_data() is None:
            raise DataError("train needs data: set train.data (or data.train) in the recipe")

    def with_estimates(
        self,
        described: dict[str, Any],
        parent: ModelFacts,
        trainable: int,
        base: ModelRef,
        frozen_layers: int = 0,
    ) -> dict[str, Any]:
        """The surgery's plan plus the parent's facts and, when the recipe trains, the
        estimated memory of a training step on the result (``trainable`` parameters,
        ``frozen_layers`` layers that do not train), which loads as the ``base``
        reference's ``load:`` says."""
        after = replace(
            parent, layers=described["layers_after"], parameters=described["parameters_after"]
        )
        plan = {**described, "models": {"model": parent.as_dict()}}
        train = self.recipe.train
        if self.has_training() and train is not None:
            load = self.recipe.model_load(own_load(base))
            plan["trainable_parameters"] = trainable
            plan["training_memory_bytes"] = training_memory(
                held=[(after, load_bytes(load.dtype, after))], trainable=trainable,
                backprop=[after], forward_only=[], train=train,
                attention=load.attn_implementation, trained_bytes=load_bytes(load.dtype, after),
                frozen_layers=frozen_layers,
            )  # fmt: skip
        return plan

    def scratch_described(
        self, parent: ModelFacts, layers: list[Any], marked: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """What a surgery on a from-scratch parent not trained yet will write, from its
        config: every block has the same shape, so sizes follow from the layer count."""

        parameters = parent.parameters + (len(layers) - parent.layers) * parent.layer_parameters
        return {
            "architecture": parent.architecture,
            "layers_before": {parent.name: parent.layers},
            "layers_after": len(layers),
            "layer_map": compact_layer_map(layers, marked),
            "parameters_before": {parent.name: parent.parameters},
            "parameters_after": parameters,
            "disk_bytes": parameters * parent.disk_bytes_per_parameter,
            "note": "the from-scratch parent is trained (and cached) on the first run",
        }

    def freeze_mask(self, prepared: Prepared) -> Any:
        """The freeze mask of the trained unit (None: every parameter trains)."""
        return None

    def build(self, prepared: Prepared, unit: str) -> Built:

        trust = any(m.trust_remote_code for m in prepared.inputs.values())
        # the surgery's output loads as its base model would: that one's load: settings
        load = self.recipe.model_load(prepared.inputs["model"].load)
        return causal_lm_unit(
            prepared.state["folder"],
            self.recipe.train_data(),
            self.recipe.train,
            trainable=self.freeze_mask(prepared),
            trust_remote_code=trust,
            **load.loader_kwargs(),
        )

    def report(
        self,
        prepared: Prepared,
        records: dict[str, TrainingRecord | None],
        scores: dict[str, dict[str, Any]],
        details: dict[str, Any],
    ) -> StageResult:
        result = super().report(prepared, records, scores, details)
        result.details = {**prepared.state["details"], **result.details}
        return result

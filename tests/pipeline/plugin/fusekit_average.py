"""A strategy from outside fusekit: the element-wise average of same-shape models.

It exists to prove that a fifth strategy plugs in without touching fusekit: its own
recipe model, its stages, and an entry point that registers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fusekit.models.resolve import model_inputs
from fusekit.recipe.common import BaseRecipe, ModelRef
from fusekit.strategies.base import Prepared, Strategy


class AverageRecipe(BaseRecipe):
    """``models``: two or more folders of one architecture, averaged tensor by tensor."""

    strategy: Literal["average"]
    models: list[ModelRef] = Field(min_length=2)


class AverageStrategy(Strategy[AverageRecipe]):
    tag = "average"

    def plan(self) -> dict[str, Any]:
        return {"models": len(self.recipe.models)}

    def prepare(self, workdir: Path) -> Prepared:
        from safetensors.torch import load_file, save_file

        from fusekit.io.provenance import copy_tokenizer_and_generation_config

        sources = model_inputs(self.recipe.models)
        tensors = [load_file(Path(s.path) / "model.safetensors") for s in sources]
        mean = {k: sum(t[k] for t in tensors) / len(tensors) for k in tensors[0]}
        save_file(mean, str(Path(workdir) / "model.safetensors"), metadata={"format": "pt"})
        (Path(workdir) / "config.json").write_bytes(
            (Path(sources[0].path) / "config.json").read_bytes()
        )
        copy_tokenizer_and_generation_config(sources[0].path, workdir)
        return Prepared(inputs={f"model_{i}": s for i, s in enumerate(sources)}, plan=self.plan())


def register() -> None:
    from fusekit.registry import Option, register_strategy

    register_strategy(
        "average",
        "fusekit_average:AverageStrategy",
        "element-wise average of same-shape models",
        recipe="fusekit_average:AverageRecipe",
        options=(Option("models", "a model folder to average (repeat)", many=True, model=True),),
    )

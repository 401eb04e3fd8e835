"""The values that pass between the pipeline's stages (see ``fusekit.strategies.base``).

Plain data with no behaviour of their own, kept low in the package so that the
training code, the pipeline and the strategies can all name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fusekit.recipe.common import LoadSpec


class ModelInput(BaseModel):
    """A model folder the output depends on, with the loading options its recipe gave.

    ``load`` is the reference's own ``load:`` only; the strategy resolves it against
    the recipe's (``BaseRecipe.model_load``), which knows whether the model trains.
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    allow_pickle: bool = False
    trust_remote_code: bool = False
    load: LoadSpec | None = None


class Prepared(BaseModel):
    """What ``prepare`` hands on: inputs, the plan, and the strategy's own JSON state."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, ModelInput]
    plan: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Built:
    """One trainable unit: everything ``fit`` needs, and what the strategy keeps for later.

    ``trainer_class`` is ``None`` for the shared ``FusekitTrainer`` (next-token loss);
    strategies whose loss differs name their own subclass and its extra arguments.
    ``after_fit`` turns the finished trainer into statistics for the training record.
    """

    model: Any
    dataset: Any
    collator: Any
    tokenizer: Any = None
    trainable: Any = None
    trainer_class: Any = None
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    after_fit: Any = None
    save_dtype: Any = None
    details: dict[str, Any] = field(default_factory=dict)

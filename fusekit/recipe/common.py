"""Recipe building blocks shared by every strategy: model references, data, training.

Recipes are strict (``extra="forbid"``): a misspelt key is an error that names
the field, never a silently ignored setting.  Relative paths are resolved
against the current working directory, like every other command-line tool.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from fusekit.io.folders import model_folder_problem
from fusekit.io.sizes import DEFAULT_SHARD_SIZE, parse_size
from fusekit.tasks import TASKS


def known_task(value: str) -> str:
    """A built-in task name, or a message listing them."""

    if value not in TASKS:
        raise ValueError(f"unknown task {value!r}; choose one of: {', '.join(TASKS)}")
    return value


class Strict(BaseModel):
    """Base for every recipe model: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- loading

#: A recipe's dtype names -> ``load_causal_lm``'s (``auto``: the checkpoint's own dtype).
TORCH_DTYPES = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

#: transformers' attention implementations a recipe may name, with the module a
#: flash kernel needs (it is refused up front where that module is missing).
ATTENTION_KERNELS: dict[str, str | None] = {
    "eager": None,
    "sdpa": None,
    "flex_attention": None,
    "flash_attention_2": "flash_attn",
    "flash_attention_3": "flash_attn_interface",
}


def known_attention(value: str | None) -> str | None:
    """An attention implementation transformers knows and whose kernel is installed."""
    if value is None:
        return None
    if value not in ATTENTION_KERNELS:
        raise ValueError(
            f"unknown attention implementation {value!r}; choose one of: "
            f"{', '.join(ATTENTION_KERNELS)}"
        )
    module = ATTENTION_KERNELS[value]
    if module is not None and importlib.util.find_spec(module) is None:
        raise ValueError(
            f"{value} needs the {module} package, which is not installed; install it "
            "(CUDA only) or use sdpa"
        )
    return value


class LoadSpec(Strict):
    """How models load: the dtype their weights are held in and their attention kernel.

    A model's own ``load:`` wins field by field over the recipe's, which wins over
    the defaults: the trained model in fp32 (``train.precision`` adds autocast over
    those fp32 master weights) and frozen models (CALM's anchor and augments,
    FuseLLM's sources) in bf16 under ``precision: bf16`` and fp32 otherwise — they
    take no optimizer step, so halving their memory costs the update no precision.
    """

    dtype: Literal["auto", "bf16", "fp32", "fp16"] | None = Field(
        None,
        description="weights' dtype in memory; auto = the checkpoint's own; default: fp32 "
        "for the trained model, and for frozen ones bf16 under precision: bf16, else fp32",
    )
    attn_implementation: str | None = Field(
        None,
        description="eager, sdpa, flex_attention, flash_attention_2 or flash_attention_3 "
        "(flash_attn installed); default: transformers' choice",
    )

    _known_attention = field_validator("attn_implementation")(
        classmethod(lambda cls, v: known_attention(v))
    )

    def loader_kwargs(self) -> dict[str, Any]:
        """``dtype`` and ``attn_implementation`` for ``fusekit.io.loading.load_causal_lm``."""
        return {
            "dtype": TORCH_DTYPES[self.dtype] if self.dtype is not None else None,
            "attn_implementation": self.attn_implementation,
        }


def resolve_load(*specs: LoadSpec | None, dtype: str) -> LoadSpec:
    """Every field from the most specific of ``specs`` that sets it; ``dtype`` if none does."""
    fields: dict[str, Any] = {}
    for spec in reversed([s for s in specs if s is not None]):
        fields.update(spec.model_dump(exclude_none=True))
    return LoadSpec(**{"dtype": dtype, **fields})


def own_load(ref: ModelRef) -> LoadSpec | None:
    """A model reference's own ``load:`` (a from-scratch model has none)."""
    return ref.load if isinstance(ref, LocalModel) else None


# --------------------------------------------------------------------------- models


class LocalModel(Strict):
    """A Hugging Face model folder on local disk."""

    path: str
    allow_pickle: bool = False
    trust_remote_code: bool = False
    load: LoadSpec | None = Field(
        None, description="this model's dtype / attention kernel, over the recipe's load:"
    )

    @model_validator(mode="after")
    def _check_folder(self) -> LocalModel:
        # Imported here: the check reads file names only, and recipe loading must stay light.

        problem = model_folder_problem(Path(self.path), allow_pickle=self.allow_pickle)
        if problem:
            raise ValueError(problem)
        return self


class ScratchSpec(Strict):
    """A tiny model that fusekit trains (and caches) itself on a built-in task.

    This is how quick-start recipes run anywhere without downloads: the "parent"
    models of a fusion are themselves trained from a few lines of recipe.
    """

    task: str = Field(description="built-in task or corpus the model is trained on")
    tasks: list[str] = Field(
        default_factory=list, description="extra built-in tasks mixed into training"
    )
    arch: Literal["llama", "qwen3", "gpt2"] = "llama"
    hidden_size: int = Field(128, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=8)
    tokenizer: Literal["auto", "kv", "bpe", "metaspace"] = "auto"
    vocab_size: int = Field(2048, ge=300, description="tokenizer size for text corpora")
    max_chars: int | None = Field(None, ge=1000, description="text budget for corpora")
    steps: int = Field(1000, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seq_len: int = Field(64, ge=8)
    seed: int = 0
    weight_decay: float | None = Field(None, ge=0, description="AdamW weight decay (default 0.01)")
    adam_beta2: float | None = Field(None, gt=0, lt=1, description="AdamW beta2 (default 0.999)")
    kv: dict[str, Any] | None = Field(
        None, description="key-value task settings (num_keys, value_max, …; see fusekit.tasks.kv)"
    )

    _known_task = field_validator("task")(classmethod(lambda cls, v: known_task(v)))


class ScratchModel(Strict):
    """``{from_scratch: {...}}`` in a recipe."""

    from_scratch: ScratchSpec


def _path_to_local(value: Any) -> Any:
    if isinstance(value, (str, Path)):
        return {"path": str(value)}
    return value


def _model_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "scratch-model" if "from_scratch" in value else "local-model"
    return "scratch-model" if isinstance(value, ScratchModel) else "local-model"


ModelRef = Annotated[
    Annotated[LocalModel, Tag("local-model")] | Annotated[ScratchModel, Tag("scratch-model")],
    Discriminator(_model_kind),
    BeforeValidator(_path_to_local),
]


# --------------------------------------------------------------------------- data


class TaskData(Strict):
    """Examples generated from a built-in task or corpus (``fusekit.tasks``)."""

    task: str
    split: Literal["train", "heldout"] = "train"
    keys: Literal["all", "held_in", "held_out"] = "all"
    n: int | None = Field(None, ge=1, description="number of examples (tasks) to generate")
    max_chars: int | None = Field(None, ge=100, description="text budget (corpora)")
    seed: int = 0
    kv: dict[str, Any] | None = Field(
        None, description="key-value task settings (num_keys, value_max, …; see fusekit.tasks.kv)"
    )

    _known_task = field_validator("task")(classmethod(lambda cls, v: known_task(v)))

    def label(self) -> str:
        parts = [self.task]
        if self.keys != "all":
            parts.append(self.keys)
        if self.split != "train":
            parts.append(self.split)
        return ":".join(parts)  # not "/": reports shorten path-like labels to their last part


_DATA_SUFFIXES = (".jsonl", ".json", ".txt", ".parquet")


class FileData(Strict):
    """A data file (``.jsonl``, ``.txt``, ``.parquet``) or a ``datasets`` folder."""

    path: str

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str) -> str:
        p = Path(value)
        if not p.exists():
            raise ValueError(f"data file {value!r} does not exist")
        if p.is_file() and not value.endswith(_DATA_SUFFIXES):
            raise ValueError(
                f"data file {value!r} has an unknown format; use one of {', '.join(_DATA_SUFFIXES)}"
            )
        return value

    def label(self) -> str:
        return Path(self.path).stem


def _data_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "task-data" if "task" in value else "file-data"
    return "task-data" if isinstance(value, TaskData) else "file-data"


SingleData = Annotated[
    Annotated[TaskData, Tag("task-data")] | Annotated[FileData, Tag("file-data")],
    Discriminator(_data_kind),
    BeforeValidator(_path_to_local),
]
# A list concatenates its parts (e.g. a task mixed with some plain examples).
DataRef = SingleData | list[SingleData]


def data_label(ref: DataRef) -> str:
    """A short human name for a data reference, used as a column in reports."""
    if isinstance(ref, list):
        return "+".join(data_label(r) for r in ref)
    return ref.label()


class DataSpec(Strict):
    """Training data and the evaluation sets every model in a run is scored on."""

    train: DataRef | None = None
    eval: list[DataRef] = Field(default_factory=list)


# --------------------------------------------------------------------------- training

#: Shown when ``train.optim`` names no optimizer transformers knows.
_COMMON_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "adamw_bnb_8bit", "sgd")

#: Optimizers whose code is another package's: name prefixes -> the module they import.
_OPTIMIZER_PACKAGES = (
    (("adamw_bnb", "adamw_8bit", "paged_", "ademamix", "lion_", "rmsprop_bnb"), "bitsandbytes"),
    (("adamw_torch_4bit", "adamw_torch_8bit"), "torchao"),
    (("schedule_free_",), "schedulefree"),
    (("lomo", "adalomo"), "lomo_optim"),
    (("grokadamw",), "grokadamw"),
    (("stable_adamw",), "optimi"),
    (("adamw_anyprecision",), "torchdistx"),
    (("adamw_torch_xla",), "torch_xla"),
    (("adamw_torch_npu_fused",), "torch_npu"),
)


def known_optimizer(value: str) -> str:
    """A ``TrainingArguments.optim`` name whose package is installed.

    Checked here, not when ``Trainer`` builds the optimizer after the surgery, the
    parents' training and the data preparation.  transformers is imported only for a
    name other than the default, so parsing a recipe stays light.
    """
    if value == "adamw_torch":
        return value
    from transformers.training_args import OptimizerNames

    if value not in {o.value for o in OptimizerNames}:
        raise ValueError(
            f"unknown optimizer {value!r}; use one of transformers' OptimizerNames, e.g. "
            f"{', '.join(_COMMON_OPTIMIZERS)}"
        )
    if value.startswith(("galore_", "apollo_")):
        raise ValueError(
            f"{value} needs optim_target_modules, which fusekit does not set; use "
            "adamw_torch, adafactor or adamw_bnb_8bit"
        )
    for prefixes, module in _OPTIMIZER_PACKAGES:
        if value.startswith(prefixes) and importlib.util.find_spec(module) is None:
            raise ValueError(f"{value} needs the {module} package, which is not installed")
    return value


class TrainSpec(Strict):
    """How to train, mapped onto ``transformers.TrainingArguments``.

    ``steps: 0`` means "build, save, do not train" — never "train by epochs";
    epochs are used only when ``steps`` is left out and ``epochs`` is given.
    """

    data: DataRef | None = None
    steps: int | None = Field(None, ge=0)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(1e-4, gt=0)
    schedule: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    seq_len: int = Field(256, ge=8)
    loss_on: Literal["all", "completion", "assistant"] | None = Field(
        None,
        description="which tokens carry the loss: all; completion (the default for "
        "prompt/completion); assistant (every assistant turn, the default for messages)",
    )
    chat_template: str | None = Field(
        None,
        description="Jinja chat template (a file or the template itself) conversations are "
        "rendered in; default: the trained model's tokenizer's",
    )
    num_proc: int | None = Field(
        None,
        ge=1,
        description="processes that tokenise the training data into its cache (datasets' "
        "map num_proc); default: up to 8 for 20,000 records or more, else one",
    )
    streaming: bool = Field(
        False,
        description="read, tokenise and pack the training data while training, with no Arrow "
        "cache (a corpus larger than the disk); finetune, block_expansion and "
        "depth_upscaling; needs steps",
    )
    shuffle_buffer: int = Field(
        1000,
        ge=1,
        description="with streaming: examples shuffled together (1 keeps the corpus's order)",
    )
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    weight_decay: float = Field(0.0, ge=0)
    adam_beta2: float = Field(
        0.999, gt=0, lt=1, description="AdamW beta2; 0.95 steadies short, high-lr runs"
    )
    max_grad_norm: float = Field(1.0, gt=0)
    log_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="score the recipe's data.eval sets on the training model before the "
        "first step and every eval_steps steps: the held-out curve (one process only)",
    )
    save_steps: int | None = Field(None, ge=1)
    save_total_limit: int = Field(2, ge=1)
    resume: bool = False
    skip_nonfinite: bool = Field(
        False,
        description="skip an optimizer step whose loss or gradient is NaN/inf (counted in the "
        "summary) instead of stopping the run",
    )
    report_to: str | list[str] = Field(
        "none", description="Trainer loggers: none, tensorboard, wandb, … (when installed)"
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute activations in the backward pass instead of keeping them: "
        "less memory for about a third more compute; loss and gradients unchanged",
    )
    optim: str = Field(
        "adamw_torch",
        description="transformers' optimizer: adamw_torch, adamw_torch_fused, adafactor, "
        "adamw_bnb_8bit (bitsandbytes), …",
    )

    _known_optimizer = field_validator("optim")(classmethod(lambda cls, v: known_optimizer(v)))

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainSpec:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give either steps or epochs, not both")
        if self.steps is None and self.epochs is None:
            raise ValueError("give steps (or epochs); steps: 0 saves the untrained result")
        if self.streaming and self.steps is None:
            raise ValueError(
                "streaming has no epochs (the stream's length is not known before it is read); "
                "give steps instead"
            )
        return self


# --------------------------------------------------------------------------- recipes


class BaseRecipe(Strict):
    """Fields every recipe has."""

    if TYPE_CHECKING:
        #: Every strategy's recipe declares it, as ``Literal["<tag>"]`` (``fusekit.registry``).
        strategy: str

    name: str | None = None
    description: str | None = None
    output: str | None = Field(None, description="output folder; `-o` overrides it")
    overwrite: bool = False
    data: DataSpec | None = None
    train: TrainSpec | None = None
    load: LoadSpec | None = Field(
        None, description="dtype and attention kernel of every model loaded; a model's own wins"
    )

    def frozen_dtype(self) -> str:
        """A frozen model's dtype when no ``load.dtype`` names one: bf16 under bf16
        training, fp32 otherwise (fp16 weights of a checkpoint trained in bf16 can
        overflow, and fp16 autocast runs the matrix products in half anyway)."""
        return "bf16" if self.train is not None and self.train.precision == "bf16" else "fp32"

    def model_load(self, own: LoadSpec | None = None, *, frozen: bool = False) -> LoadSpec:
        """One model's load settings: ``own`` over the recipe's ``load:`` over the defaults
        (fp32 for the model that trains, ``frozen_dtype`` for one that does not)."""
        return resolve_load(own, self.load, dtype=self.frozen_dtype() if frozen else "fp32")

    @model_validator(mode="after")
    def _curve_has_sets(self) -> BaseRecipe:
        if self.train is not None and self.train.eval_steps and not self.eval_data():
            raise ValueError(
                "train.eval_steps scores the data.eval sets during training; give data.eval "
                "or drop train.eval_steps"
            )
        return self

    def train_data(self) -> DataRef | None:
        """``train.data`` wins over ``data.train``; either may be used."""
        if self.train is not None and self.train.data is not None:
            return self.train.data
        return self.data.train if self.data is not None else None

    def eval_data(self) -> list[DataRef]:
        return list(self.data.eval) if self.data is not None else []

    def chat_templates(self) -> dict[str, str]:
        """Every chat template the recipe names (a file or the template), by role: a
        template file shapes the weights as the data does, so its content is hashed."""
        template = self.train.chat_template if self.train is not None else None
        return {"chat_template": template} if template else {}

    def shaping_data(self) -> list[DataRef]:
        """Every data reference that shapes the weights: checked, hashed, fingerprinted."""
        train = self.train_data()
        return [] if train is None else [train]


class SurgeryRecipe(BaseRecipe):
    """Fields the surgery strategies (depth up-scaling, block expansion) share.

    ``dtype`` is the output's, written by the surgery; training (if any) then loads
    that output as ``load:`` says and saves it back in the output's dtype.
    """

    shard_size: str = DEFAULT_SHARD_SIZE
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        None, description="cast the output's weights; default keeps the source dtype"
    )

    @field_validator("shard_size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

"""Model sizes and memory estimates for ``--dry-run``, from configs alone.

A user deciding whether a run fits a machine needs the figures before it starts,
and a dry run may read no weights and train nothing. So every figure here comes
from shapes: the architecture built on the meta device from a folder's
``config.json``, or from a ``from_scratch`` spec's config when that model has not
been trained yet.

Training memory is an estimate of the peak, in bytes, of one training step:

* weights: every model held, in its load dtype (``load.dtype``: fp32 for the model
  that trains, the training precision for frozen ones by default); models run beside
  the trained one without gradients (FuseLLM's sources) are ``source_weights``, which
  sharding leaves whole on every rank;
* gradients: one per trainable parameter in the parameters' dtype (fp32 masters
  by default; LoRA adapters and CALM's Θ_C are always fp32);
* optimizer: its state per trainable parameter (``train.optim``): two moments in
  the parameters' dtype for the AdamW family (8 bytes over fp32 masters), 2 bytes
  for 8-bit AdamW, one moment for Lion, RMSprop and Adagrad, three for AdEMAMix,
  about none for Adafactor (factored moments) and SGD (``_OPTIMIZER_STATE``);
* activations kept for backward, per layer of each model gradients flow through,
  counted for a pre-norm decoder block the way autograd saves them: per token
  ``6h + 4i`` values in the compute dtype (projection and MLP outputs, 2 bytes under
  bf16/fp16 autocast) and ``5h`` in fp32 (norm inputs and outputs), plus the
  attention probabilities (``a·s`` per token) with ``eager`` attention only — SDPA
  keeps none (measured on SmolLM2-135M at 4 × 512 tokens: 4.1 GB after the forward
  with SDPA, 5.8 GB with eager).  With gradient checkpointing each layer keeps its
  input (``h``) and one layer at a time is recomputed;
* logits: ``[batch, seq, vocab]`` fp32 three times over (logits, log-softmax,
  their gradient) for a trained model; once for a model run without gradients;
* runtime: what a training step allocates beyond these on the CPU (autograd's
  engine, oneDNN's scratch, ``Trainer``), measured at 250-300 MB for any model
  size by ``bench/memory.py``; not counted on a GPU, whose peak
  (``torch.cuda.max_memory_allocated``) holds tensors only.

On the CPU the parts add up: freed memory stays in the allocator, so the peak
RSS is their sum.  ``bench/memory.py`` checks the estimate against measured peaks
(``docs/benchmarks.md``).  It does not count a run's save, which serialises each
tensor once more.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.models.resolve import peek_model, trusts_remote_code
from fusekit.models.scratch import scratch_config, scratch_folder
from fusekit.recipe.common import ModelRef, ScratchModel, TrainSpec

FP32 = 4
#: What a CPU training step allocates beyond the parts counted (bench/memory.py: 290-299 MB
#: measured on tiny models, whose counted parts are ~16 MB).
CPU_RUNTIME_BYTES = 256 * 10**6


@dataclass(frozen=True)
class ModelFacts:
    """What a plan needs of a model: its name, shape and parameter counts."""

    name: str
    architecture: str
    layers: int
    hidden: int
    heads: int
    #: the MLP's inner width (``intermediate_size``; GPT-2's ``n_inner`` or 4·hidden)
    intermediate: int
    vocab: int
    parameters: int
    #: parameters of one decoder block (every block has the same shape here)
    layer_parameters: int
    #: bytes per parameter on disk (the checkpoint's dtype)
    disk_bytes_per_parameter: int
    #: a from-scratch model fusekit trains (and caches) on the first run
    from_scratch: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config_shape(self) -> dict[str, int]:
        """Width, depth and heads under transformers' usual config names."""
        return {
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
        }


#: a parameter of the first decoder block, whatever the family calls its block list
_FIRST_BLOCK = re.compile(r"(^|\.)(layers|h|blocks)\.0\.")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def _meta_model(config: Any, trust_remote_code: bool = False) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _facts(name: str, config: Any, model: Any, from_scratch: bool) -> ModelFacts:
    # model.parameters() yields a tied tensor once, so it counts once
    total = sum(p.numel() for p in model.parameters())
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0))
    block = sum(p.numel() for n, p in model.named_parameters() if _FIRST_BLOCK.search(n))
    dtype = str(getattr(text, "dtype", None) or "float32")
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0))
    inner = getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None)
    return ModelFacts(
        name=name,
        architecture=str(config.model_type),
        layers=layers,
        hidden=hidden,
        heads=int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0)),
        intermediate=int(inner or 4 * hidden),
        vocab=int(text.vocab_size),
        parameters=total,
        layer_parameters=block,
        disk_bytes_per_parameter=_DTYPE_BYTES.get(dtype.replace("torch.", ""), FP32),
        from_scratch=from_scratch,
    )


def _config(ref: ModelRef) -> tuple[str, Any, bool]:
    """(name, transformers config, trust_remote_code) of a model reference."""
    from transformers import AutoConfig

    folder = peek_model(ref)
    if folder is not None:
        trust = trusts_remote_code(ref)
        config = AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust
        )
        return Path(folder).name, config, trust

    assert isinstance(ref, ScratchModel)  # peek_model finds every local folder (or raises)
    spec = ref.from_scratch
    return scratch_folder(spec).name, scratch_config(spec), False


def model_facts(ref: ModelRef) -> ModelFacts:
    """Facts of a recipe's model reference, trained or not, without reading weights."""
    name, config, trust = _config(ref)
    scratch = isinstance(ref, ScratchModel)
    return _facts(name, config, _meta_model(config, trust), scratch)


def lora_parameters(ref: ModelRef, peft_kwargs: dict[str, Any]) -> int:
    """Trainable parameters of a LoRA on ``ref``: peft wraps the meta-device model."""
    from peft import LoraConfig, get_peft_model

    _, config, trust = _config(ref)
    with log.peft_deprecations_off():
        wrapped = get_peft_model(
            _meta_model(config, trust), LoraConfig(task_type="CAUSAL_LM", **peft_kwargs)
        )
    return int(wrapped.get_nb_trainable_parameters()[0])


#: Per-parameter optimizer state by ``train.optim`` name prefix, each before the shorter
#: prefixes it extends:
#: (moments, bytes per moment), None meaning the parameters' own dtype.  From the
#: classes transformers' ``trainer_optimizer.py`` builds for each name (its
#: ``_get_*`` handlers) at their defaults, since fusekit passes no ``optim_args``:
#: torch's SGD (momentum 0) and RMSprop (momentum 0, not centred) keep none and one
#: buffer; Adagrad one sum; bitsandbytes keeps 32-bit states in fp32 and 8-bit ones in
#: a byte whatever the parameters' dtype; AdEMAMix three moments, Lion one; torchao's
#: 4-bit AdamW half a byte a moment; AnyPrecisionAdamW fp32 moments by default;
#: GrokAdamW a gradient average beside Adam's two; schedule-free AdamW/RAdam keep z and
#: the second moment, SGD z; Adafactor, LOMO and AdaLomo factored or no moments.
_OPTIMIZER_STATE: tuple[tuple[str, int, float | None], ...] = (
    ("schedule_free_sgd", 1, None),
    ("schedule_free_", 2, None),
    ("adamw_anyprecision", 2, 4),
    ("adamw_torch_4bit", 2, 0.5),
    ("adamw_torch_8bit", 2, 1),
    ("paged_ademamix_32bit", 3, 4),
    ("paged_ademamix_8bit", 3, 1),
    ("ademamix_8bit", 3, 1),
    ("ademamix", 3, 4),
    ("paged_adamw_32bit", 2, 4),
    ("paged_adamw_8bit", 2, 1),
    ("adamw_bnb_8bit", 2, 1),
    ("adamw_8bit", 2, 1),
    ("paged_lion_32bit", 1, 4),
    ("paged_lion_8bit", 1, 1),
    ("lion_32bit", 1, 4),
    ("lion_8bit", 1, 1),
    ("rmsprop_bnb_8bit", 1, 1),
    ("rmsprop_bnb", 1, 4),
    ("rmsprop", 1, None),
    ("adagrad", 1, None),
    ("grokadamw", 3, None),
    ("sgd", 0, None),
    ("adafactor", 0, None),
    ("adalomo", 0, None),
    ("lomo", 0, None),
)


def optimizer_state_bytes(optim: str, trained_bytes: int = FP32) -> float:
    """Bytes of optimizer state per trainable parameter for ``train.optim`` (see
    ``_OPTIMIZER_STATE``); AdamW and its kin (torch's, fused, stable) keep two moments
    in the parameters' dtype (``trained_bytes``)."""
    for prefix, moments, size in _OPTIMIZER_STATE:
        if optim.startswith(prefix):
            return moments * (trained_bytes if size is None else size)
    return 2 * trained_bytes


def activation_bytes(
    m: ModelFacts, batch: int, seq: int, *, precision: str, attention: str | None,
    checkpointing: bool, frozen_layers: int = 0,
) -> int:  # fmt: skip
    """What ``m``'s layers keep for backward (see the module docstring).

    A frozen layer (``frozen_layers`` of them: block expansion's old blocks, CALM's
    anchor) passes gradients on without computing its weights' own, and a linear
    layer needs only its weight for that, not its input: its four linear inputs
    (``3h + i`` values a token) are not kept.
    """
    compute = 2 if precision in ("bf16", "fp16") else FP32
    per_token = (6 * m.hidden + 4 * m.intermediate) * compute + 5 * m.hidden * FP32
    if attention == "eager":
        per_token += m.heads * seq * compute
    layer = batch * seq * per_token
    if checkpointing:
        return batch * seq * m.hidden * compute * m.layers + layer
    frozen = min(frozen_layers, m.layers) * batch * seq * (3 * m.hidden + m.intermediate) * compute
    return layer * m.layers - frozen


def training_memory(
    *,
    held: Sequence[tuple[ModelFacts, int]],
    trainable: int,
    backprop: Sequence[ModelFacts],
    forward_only: Sequence[ModelFacts],
    train: TrainSpec,
    attention: str | None = None,
    extra_weights: int = 0,
    trained_bytes: int = FP32,
    frozen_layers: int = 0,
    alternatives: bool = True,
) -> dict[str, Any]:
    """The parts of one training step's peak memory, and their ``total`` (bytes).

    ``held``: every model in memory with the bytes per parameter of its load dtype;
    ``backprop``: models gradients flow through (their activations are kept);
    ``forward_only``: models run without gradients (only their logits count);
    ``train``: the recipe's ``TrainSpec`` (batch, length, precision, optimizer,
    checkpointing); ``attention``: the trained model's attention kernel;
    ``extra_weights``: bytes of trained weights outside every model (CALM's Θ_C);
    ``trained_bytes``: the trained parameters' dtype, which their gradients and the
    optimizer's moments share (fp32 masters by default; 2 under ``load.dtype: bf16``);
    ``frozen_layers``: how many of the backprop model's layers do not train.
    ``options`` holds the parts each memory knob not yet set would give (the dry run
    suggests them when the total exceeds the device).
    """
    batch, seq = train_shape(train)
    activations = sum(
        activation_bytes(
            m, batch, seq, precision=train.precision, attention=attention,
            checkpointing=train.gradient_checkpointing, frozen_layers=frozen_layers,
        )
        for m in backprop
    )  # fmt: skip
    vocab = 3 * sum(m.vocab for m in backprop) + sum(m.vocab for m in forward_only)
    beside = {id(m) for m in forward_only}
    parts: dict[str, Any] = {
        "weights": sum(m.parameters * size for m, size in held if id(m) not in beside)
        + extra_weights,
        # models run beside the trained one (FuseLLM's sources) are held whole by every rank
        "source_weights": sum(m.parameters * size for m, size in held if id(m) in beside),
        "gradients": trained_bytes * trainable,
        "optimizer": round(optimizer_state_bytes(train.optim, trained_bytes) * trainable),
        "activations": activations,
        "logits": FP32 * batch * seq * vocab,
        "runtime": 0 if _cuda() else CPU_RUNTIME_BYTES,
    }
    parts["total"] = sum(parts.values())
    if alternatives:
        again = partial(training_memory, held=held, trainable=trainable, backprop=backprop,
                        forward_only=forward_only, attention=attention,
                        extra_weights=extra_weights, trained_bytes=trained_bytes,
                        frozen_layers=frozen_layers, alternatives=False)  # fmt: skip
        parts["options"] = {
            knob: again(train=train.model_copy(update=change))
            for knob, change in _knobs(train).items()
        }
    return parts


def _knobs(train: TrainSpec) -> dict[str, dict[str, Any]]:
    """The settings that would lower a step's memory, as recipe lines, and their change."""
    knobs: dict[str, dict[str, Any]] = {}
    if not train.gradient_checkpointing:
        knobs["train.gradient_checkpointing: true"] = {"gradient_checkpointing": True}
    if train.precision == "fp32":
        knobs["train.precision: bf16"] = {"precision": "bf16"}
    if optimizer_state_bytes(train.optim) > 0:
        knobs["train.optim: adafactor"] = {"optim": "adafactor"}
    if train.batch_size > 1:
        half = train.batch_size // 2
        knobs[f"train.batch_size: {half} with grad_accum: {train.grad_accum * 2}"] = {
            "batch_size": half, "grad_accum": train.grad_accum * 2,
        }  # fmt: skip
    return knobs


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def load_bytes(dtype: str | None, facts: ModelFacts) -> int:
    """Bytes per parameter of a model loaded as ``load.dtype`` says (``auto``: as stored)."""
    return {"bf16": 2, "fp16": 2, "fp32": FP32}.get(str(dtype), facts.disk_bytes_per_parameter)


def train_shape(train: TrainSpec) -> tuple[int, int]:
    """(micro-batch rows, tokens per row) of a recipe's ``train`` section."""
    return int(train.batch_size), int(train.seq_len)


def sharded(parts: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A step's memory per rank under an accelerate config's sharding.

    FSDP (fusekit shards with FSDP2, full sharding) divides weights, gradients and
    optimizer state by the number of ranks; DeepSpeed ZeRO-2 the gradients and
    state, ZeRO-1 the state; data parallelism (DDP) divides nothing.  Activations,
    logits and the runtime are each rank's own.
    """
    ranks = int(config.get("num_processes") or 1)
    kind = sharding_kind(config)
    stage = int((config.get("deepspeed_config") or {}).get("zero_stage") or 0)
    divided = {
        "FSDP": ("weights", "gradients", "optimizer"),
        "DEEPSPEED": {1: ("optimizer",), 2: ("gradients", "optimizer")}.get(stage, ()),
    }.get(kind, ())
    out: dict[str, Any] = {
        k: (v // ranks if k in divided else v)
        for k, v in parts.items()
        if k not in ("options", "total", "ranks")
    }
    out["total"] = sum(out.values())
    out["ranks"] = ranks
    if "options" in parts:
        out["options"] = {k: sharded(v, config) for k, v in parts["options"].items()}
    return out


def sharding_kind(config: dict[str, Any]) -> str:
    """An accelerate config's ``distributed_type`` (``NO`` when it names none)."""
    return str(config.get("distributed_type") or "NO")


def device_memory() -> tuple[str, int]:
    """What one training process must fit in: the first GPU's memory where CUDA is
    present, else the machine's RAM."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"GPU {props.name}", int(props.total_memory)
    return "RAM", int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_advice(
    memory: dict[str, Any], capacity: int, *, sharded_already: bool = False
) -> list[tuple[str, int]]:
    """``(setting, total it gives)`` for each setting that lowers a step over ``capacity``,
    lowest first; then FSDP2 over the fewest GPUs that would fit (unless sharded)."""
    worth = 0.99 * memory["total"]  # a setting that saves under 1 % is no advice
    advice = sorted(
        ((knob, parts["total"]) for knob, parts in memory.get("options", {}).items()
         if parts["total"] < worth),
        key=lambda item: item[1],
    )  # fmt: skip
    if not sharded_already:
        for ranks in (2, 4, 8, 16, 32, 64):
            total = sharded(memory, {"distributed_type": "FSDP", "num_processes": ranks})["total"]
            if total <= capacity:
                advice.append((f"FSDP2 over {ranks} GPUs (docs/distributed.md)", total))
                break
    return advice

"""Model sizes and memory estimates for ``--dry-run``, from configs alone.

A user deciding whether a run fits a machine needs the figures before it starts,
and a dry run may read no weights and train nothing. So every figure here comes
from shapes: the architecture built on the meta device from a folder's
``config.json``, or from a ``from_scratch`` spec's config when that model has not
been trained yet.

Training memory is an estimate of the peak, in bytes, of one training step:

* weights: every loaded model in fp32 (fusekit trains in fp32; ``precision``
  autocasts the matmuls but keeps fp32 masters), 4 bytes per parameter;
* optimiser: a gradient and AdamW's two moments per trainable parameter, 12 bytes;
* activations kept for backward, per layer of each model gradients flow through,
  ``s·b·h·(34 + 5·a·s/h)`` bytes at 16 bits (Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", no recomputation),
  doubled for fp32;
* logits: ``[batch, seq, vocab]`` fp32 three times over (logits, log-softmax,
  their gradient) for a trained model; once for a model run without gradients.

It is an order-of-magnitude guide (allocator overheads, fused kernels and the
framework itself are not counted), which is what the plan labels it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fusekit import log

FP32 = 4
#: A gradient and AdamW's two moments, in fp32, per trainable parameter.
OPTIMIZER_BYTES_PER_PARAMETER = 3 * FP32


@dataclass(frozen=True)
class ModelFacts:
    """What a plan needs of a model: its name, shape and parameter counts."""

    name: str
    architecture: str
    layers: int
    hidden: int
    heads: int
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
    return ModelFacts(
        name=name,
        architecture=str(config.model_type),
        layers=layers,
        hidden=int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0)),
        heads=int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0)),
        vocab=int(text.vocab_size),
        parameters=total,
        layer_parameters=block,
        disk_bytes_per_parameter=_DTYPE_BYTES.get(dtype.replace("torch.", ""), FP32),
        from_scratch=from_scratch,
    )


def _config(ref: Any) -> tuple[str, Any, bool]:
    """(name, transformers config, trust_remote_code) of a model reference."""
    from transformers import AutoConfig

    from fusekit.io.refs import local_settings, peek_model

    folder = peek_model(ref)
    if folder is not None:
        trust = local_settings(ref)["trust_remote_code"]
        config = AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust
        )
        return Path(folder).name, config, trust
    from fusekit.sources import scratch_config, scratch_folder

    spec = ref.from_scratch
    return scratch_folder(spec).name, scratch_config(spec), False


def model_facts(ref: Any) -> ModelFacts:
    """Facts of a recipe's model reference, trained or not, without reading weights."""
    name, config, trust = _config(ref)
    scratch = getattr(ref, "from_scratch", None) is not None
    return _facts(name, config, _meta_model(config, trust), scratch)


def lora_parameters(ref: Any, peft_kwargs: dict[str, Any]) -> int:
    """Trainable parameters of a LoRA on ``ref``: peft wraps the meta-device model."""
    from peft import LoraConfig, get_peft_model

    _, config, trust = _config(ref)
    with log.peft_deprecations_off():
        wrapped = get_peft_model(
            _meta_model(config, trust), LoraConfig(task_type="CAUSAL_LM", **peft_kwargs)
        )
    return int(wrapped.get_nb_trainable_parameters()[0])


def _activation_bytes(m: ModelFacts, batch: int, seq: int) -> int:
    per_layer = seq * batch * m.hidden * (34 + 5 * m.heads * seq / max(m.hidden, 1))
    return int(per_layer * m.layers * (FP32 / 2))


def training_memory(
    *,
    loaded: list[ModelFacts],
    trainable: int,
    backprop: list[ModelFacts],
    forward_only: list[ModelFacts],
    batch: int,
    seq: int,
    loaded_half: tuple[ModelFacts, ...] = (),
) -> dict[str, int]:
    """The parts of one training step's peak memory, and their ``total`` (bytes).

    ``loaded``: models held in fp32, ``loaded_half`` in a 2-byte dtype;
    ``backprop``: models gradients flow through (their activations are kept);
    ``forward_only``: models run without gradients (only their logits count).
    """
    parts = {
        "weights": FP32 * sum(m.parameters for m in loaded)
        + 2 * sum(m.parameters for m in loaded_half),
        "optimizer": OPTIMIZER_BYTES_PER_PARAMETER * trainable,
        "activations": sum(_activation_bytes(m, batch, seq) for m in backprop),
        "logits": FP32
        * batch
        * seq
        * (3 * sum(m.vocab for m in backprop) + sum(m.vocab for m in forward_only)),
    }
    return {**parts, "total": sum(parts.values())}


def train_shape(train: Any) -> tuple[int, int]:
    """(micro-batch rows, tokens per row) of a recipe's ``train`` section."""
    return int(train.batch_size), int(train.seq_len)

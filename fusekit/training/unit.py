"""The plain causal-LM unit: a model folder trained on next-token loss.

``causal_lm_unit`` is the ``build`` stage that finetune, block expansion, depth
up-scaling and the LoRA baseline share; ``train_causal_lm`` runs it through
``fit`` and saves, for from-scratch parents trained outside a recipe's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.data.chat import template_text
from fusekit.data.records import data_label
from fusekit.io.loading import load_causal_lm, load_tokenizer
from fusekit.io.saving import config_dtype, save_trained
from fusekit.recipe.common import TrainSpec
from fusekit.training.fit import NOT_WEIGHTS_TRAIN, fit
from fusekit.units import Built


def causal_lm_unit(
    model_dir: str | Path,
    data: Any,
    spec: TrainSpec | None,
    *,
    trainable: Any = None,
    lora: dict[str, Any] | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    dtype: Any = "float32",
    attn_implementation: str | None = None,
) -> Built:
    """Model, tokenizer, dataset and collator for next-token training of ``model_dir``.

    ``trainable`` is ``None`` (everything), a name predicate, or exact names / ``re:``
    patterns.  ``lora`` (``peft.LoraConfig`` fields) trains adapters instead; they
    are merged when the unit is saved, so the output is a plain model.  With
    ``spec.steps == 0`` no data is read.  ``dtype`` (fp32: the master weights
    ``train.precision``'s autocast works from) and ``attn_implementation`` are
    ``load_causal_lm``'s.
    """
    import torch
    import torch.distributed as dist

    from fusekit.data.causal_lm import PadCollator, pad_id
    from fusekit.data.streamed import StreamedExamples
    from fusekit.data.tokenized import tokenized_examples

    model_dir = Path(model_dir)
    model = load_causal_lm(
        model_dir,
        dtype=dtype,
        attn_implementation=attn_implementation,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    if spec is not None and spec.chat_template:
        # The output is saved with the template it was trained in: generation, fusekit
        # eval and a user's apply_chat_template then render conversations as training did.
        tokenizer.chat_template = template_text(spec.chat_template)
    dataset = collator = None
    if spec is not None and spec.steps != 0:
        source = data_label(data)
        common: dict[str, Any] = {"loss_on": spec.loss_on, "chat_template": spec.chat_template,
                                  "model": str(model_dir), "source": source}  # fmt: skip
        if spec.streaming:
            dataset = StreamedExamples(data, tokenizer, spec.seq_len, seed=spec.seed,
                                       buffer=spec.shuffle_buffer, **common)  # fmt: skip
            dataset.first()  # a stream that trains nothing is refused before training
            log.info(f"fusekit: {source}: streamed, shuffled within "
                     f"{spec.shuffle_buffer:,} examples (no cache)")  # fmt: skip
            # Several processes: rank 0 reads a batch for every rank and accelerate joins
            # them before it hands each rank its part, so every batch is padded to seq_len.
            # (The process group says how many; accelerate's PartialState does not, on CPU
            # ranks started by torchrun: fusekit.pipeline.stages.rank.)
            several = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            collator = PadCollator(pad_id(tokenizer), spec.seq_len if several else None)
        else:
            dataset = tokenized_examples(data, tokenizer, spec.seq_len, num_proc=spec.num_proc,
                                         **common)  # fmt: skip
            collator = PadCollator(pad_id(tokenizer))
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        # Seeded: the adapters' random init must not depend on what ran before in the
        # process, or the same recipe would give other weights on every run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed if spec is not None else 0)
            with log.peft_deprecations_off():
                model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
        trainable = None  # peft has already frozen everything but the adapters
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return Built(
        model=model,
        dataset=dataset,
        collator=collator,
        tokenizer=tokenizer,
        trainable=trainable,
        save_dtype=config_dtype(model_dir),
    )


def train_causal_lm(
    model_dir: str | Path,
    data: Any,
    spec: TrainSpec,
    out_dir: str | Path,
    *,
    trainable: Any = None,
    checkpoint_dir: str | Path | None = None,
    lora: dict[str, Any] | None = None,
    label: str = "model",
) -> dict[str, Any]:
    """Train the model in ``model_dir`` on ``data`` and save it to ``out_dir``.

    ``label`` names the model in progress lines.

    Returns the training record as JSON.  ``spec.steps == 0`` trains and writes nothing.
    """

    out_dir = Path(out_dir)
    if spec.steps == 0:
        return {"steps": 0, "trained": False}
    built = causal_lm_unit(model_dir, data, spec, trainable=trainable, lora=lora)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir else out_dir / ".checkpoints"
    record = fit(
        built,
        spec,
        checkpoints,
        fingerprint={
            "model": str(model_dir),
            "spec": spec.model_dump(mode="json", exclude=set(NOT_WEIGHTS_TRAIN)),
        },
        resume=spec.resume,
        label=label,
    )
    save_trained(built.model, built.tokenizer, out_dir, dtype=built.save_dtype)
    return record.model_dump(mode="json")

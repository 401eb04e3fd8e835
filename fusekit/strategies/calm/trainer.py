"""Training Θ_C with ``transformers.Trainer``: the bases stay frozen and in eval mode.

The shared ``FusekitTrainer`` builds optimizer state only for parameters that
require gradients — here the composition's.  This subclass computes the loss
itself (the composed forward returns next-token loss on the supervised tokens)
and saves (and resumes) checkpoints as Θ_C alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit.data.chat import LossOn, Renderer, is_conversational, template_text
from fusekit.data.chat import chat_template as chat_template_for
from fusekit.errors import DataError
from fusekit.strategies.calm.io import WEIGHTS_NAME
from fusekit.training.trainer import FusekitTrainer


def is_composition_parameter(name: str) -> bool:
    return name.startswith("composition.")


class CalmTrainer(FusekitTrainer):
    """``Trainer`` for a ``ComposedModel``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trainable", is_composition_parameter)
        super().__init__(*args, **kwargs)
        # the composed forward does not take num_items_in_batch: let Trainer scale the loss
        self.model_accepts_loss_kwargs = False

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        # the output layer runs where the loss looks only (``ComposedModel.forward``)
        outputs = model(**inputs, loss_only=not return_outputs)
        loss = outputs["loss"]
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        if not self.args.should_save:
            return  # one writer per checkpoint: two ranks writing one file may interleave
        folder = output_dir or self.args.output_dir
        assert folder is not None  # TrainingArguments.__post_init__ fills output_dir
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        state = {
            k: v.detach().contiguous().cpu() for k, v in model.composition.state_dict().items()
        }
        save_file(state, str(out / WEIGHTS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Resume: a checkpoint holds Θ_C alone (see ``_save``); the bases never change."""
        from safetensors.torch import load_file

        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        state = load_file(str(Path(resume_from_checkpoint) / WEIGHTS_NAME))
        model.composition.load_state_dict(state, strict=True)


def composition_dataset(
    model: Any,
    data: Any,
    seq_len: int,
    *,
    loss_on: LossOn | None = None,
    chat_template: str | None = None,
    anchor: str = "the anchor",
    source: str = "data",
) -> Any:
    """Training examples in the form the composed model needs (see ``collate``), made
    once and read from the Arrow cache; conversations are rendered in
    ``chat_template``, else the anchor's own.  ``data`` is a data reference or records.

    With a shared tokenizer they are the plain causal-LM examples
    (``tokenized_examples``); with augments of their own tokenizers every model's
    tokens of each example are kept, keyed by all the tokenizers besides the data.
    """
    from fusekit.data.causal_lm import RecordStream
    from fusekit.data.tokenized import (
        cached_rows,
        content_key,
        parts,
        tokenized_examples,
        tokenizer_key,
    )

    if all(model.shared_tokenizer):
        return tokenized_examples(data, model.anchor_tokenizer, seq_len, loss_on=loss_on,
                                  chat_template=chat_template, model=anchor, source=source)  # fmt: skip
    from fusekit.strategies.calm.collate import OFFSETS_SCHEMA, offsets_examples

    def rows() -> Any:
        records = RecordStream(data)
        renderer = None
        if any(is_conversational(r) for r in records):
            template = chat_template_for(model.anchor_tokenizer, chat_template, anchor)
            renderer = Renderer(model.anchor_tokenizer, template)
        return offsets_examples(
            records, model.anchor_tokenizer, model.augment_tokenizers, model.shared_tokenizer,
            seq_len, loss_on=loss_on, renderer=renderer, source=source,
        )  # fmt: skip

    payload = {
        # bumped when encode_offsets_example makes other examples from the same inputs
        "shape": "calm-offsets-2",
        "data": [content_key(p) for p in parts(data)],
        "anchor": tokenizer_key(model.anchor_tokenizer),
        "augments": [
            None if same else tokenizer_key(tok)
            for tok, same in zip(model.augment_tokenizers, model.shared_tokenizer, strict=True)
        ],
        "chat_template": template_text(chat_template)
        or getattr(model.anchor_tokenizer, "chat_template", None),
        "seq_len": seq_len,
        "loss_on": loss_on,
    }
    dataset = cached_rows(payload, rows, OFFSETS_SCHEMA, seq_len=seq_len, source=source)
    if not len(dataset):
        raise DataError(f"{source}: the training data produced no examples")
    return dataset


def composition_collator(model: Any) -> Any:
    from fusekit.data.causal_lm import pad_id
    from fusekit.strategies.calm.collate import CalmCollator

    aug_pads = [pad_id(t) if t is not None else 0 for t in model.augment_tokenizers]
    return CalmCollator(pad_id(model.anchor_tokenizer), aug_pads)

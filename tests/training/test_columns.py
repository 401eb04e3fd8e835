"""The shared trainer's loss runs the output layer only at labelled columns, and is
the loss ``Trainer`` computes over the full logits: same value, same gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fusekit.recipe import TrainSpec
from fusekit.training.columns import scored_columns
from tests.tiny import randomize_, tiny_config


def _model(arch: str) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, num_layers=2), dtype=torch.float32)
    randomize_(model, 0)
    return model.eval()  # no dropout: both losses see the same network


def _batch() -> dict[str, torch.Tensor]:
    """Two answers of different lengths at the end of 12-token rows, one row padded."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 320, (2, 12), generator=gen)
    labels = torch.full_like(ids, -100)
    labels[0, 9:] = ids[0, 9:]
    labels[1, 7:10] = ids[1, 7:10]
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _trainer(model: Any, tmp_path: Path) -> Any:
    from fusekit.training.args import to_training_arguments
    from fusekit.training.trainer import FusekitTrainer

    args = to_training_arguments(TrainSpec(steps=1), tmp_path)
    return FusekitTrainer(model=model, args=args, train_dataset=[])


def _loss_and_grads(trainer: Any, model: Any, *, full: bool, items: Any = None) -> Any:
    from transformers import Trainer

    model.zero_grad(set_to_none=True)
    compute = Trainer.compute_loss if full else type(trainer).compute_loss
    loss = compute(trainer, model, _batch(), num_items_in_batch=items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def test_scored_columns_are_the_positions_before_a_label() -> None:
    labels = _batch()["labels"]
    assert scored_columns(labels).tolist() == [6, 7, 8, 9, 10]
    assert scored_columns(torch.full((2, 5), -100)) is None  # nothing labelled
    assert scored_columns(torch.ones(2, 5, dtype=torch.long)) is None  # every column


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("items", [None, 11])
def test_kept_columns_loss_is_trainers_loss(arch: str, items: Any, tmp_path: Path) -> None:
    model = _model(arch)
    trainer = _trainer(model, tmp_path)
    seen: list[int] = []
    head = model.get_output_embeddings()
    head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    loss, grads = _loss_and_grads(trainer, model, full=False, items=items)
    assert seen == [5]  # the output layer ran at the five scored columns only
    ref, ref_grads = _loss_and_grads(trainer, model, full=True, items=items)
    assert seen == [5, 12]
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) == len(list(model.parameters()))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_lora_model_keeps_columns_too(tmp_path: Path) -> None:
    from fusekit.strategies.calm.baselines import lora_model

    model, _ = lora_model(_model("llama"), 2000)
    trainer = _trainer(model, tmp_path)
    seen: list[int] = []
    model.get_output_embeddings().register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[1])
    )
    loss, grads = _loss_and_grads(trainer, model, full=False)
    ref, ref_grads = _loss_and_grads(trainer, model, full=True)
    assert seen == [5, 12]
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    assert grads and all("lora_" in name for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_outputs_wanted_take_trainers_path(tmp_path: Path) -> None:
    model = _model("llama")
    trainer = _trainer(model, tmp_path)
    loss, outputs = trainer.compute_loss(model, _batch(), return_outputs=True)
    assert outputs.logits.shape == (2, 12, 320) and loss.ndim == 0

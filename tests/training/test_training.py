"""The shared trainer: freeze masks, masking of prompts, steps: 0 (resume and ranks: tests/pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fusekit.data.causal_lm import CausalLMDataset, encode_prompt_completion, pack_texts
from fusekit.recipe import TrainSpec
from fusekit.training.unit import train_causal_lm
from tests.training.conftest import make_tokenizer


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_prompt_is_not_trained_on() -> None:
    tok = make_tokenizer()
    ids, labels = encode_prompt_completion(tok, "the cat", " sat on", seq_len=32)
    assert ids == [1, tok.convert_tokens_to_ids("the"), tok.convert_tokens_to_ids("cat"),
                   tok.convert_tokens_to_ids("sat"), tok.convert_tokens_to_ids("on"), 2]  # fmt: skip
    assert labels[:3] == [-100, -100, -100] and labels[3:] == ids[3:]


def test_packing_fills_blocks_and_separates_documents() -> None:
    tok = make_tokenizer()  # adds <bos> (1) in front of every encoding
    blocks = pack_texts(tok, ["the cat sat", "a dog ran to the house"], seq_len=4)
    assert all(len(b) == 4 and b[0] == 1 for b in blocks)  # every block starts like an input
    stream = [t for b in blocks for t in b[1:]]
    plain = [tok(t, add_special_tokens=False)["input_ids"] for t in ("the cat sat", "a dog ran")]
    assert stream[:7] == [*plain[0], 2, *plain[1]]  # documents packed, EOS between
    ds = CausalLMDataset(
        [{"text": "the cat sat " * 10}, {"prompt": "a", "completion": " dog"}], tok, 8
    )
    assert ds[len(ds) - 1]["labels"][0] == -100


def test_freeze_mask_trains_only_the_named_parameters(
    tiny_llama: Path, corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    before = _weights(tiny_llama)
    spec = TrainSpec(steps=3, lr=1e-2, batch_size=4, seq_len=16, log_steps=1)
    summary = train_causal_lm(
        tiny_llama, str(corpus), spec, out, trainable=["re:^model\\.layers\\.1\\."]
    )
    after = _weights(out)
    assert summary["steps"] == 3 and len(summary["loss_curve"]) == 3
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    assert summary["trainable_parameters"] < summary["total_parameters"]
    assert (out / "tokenizer.json").is_file()


def test_steps_zero_trains_nothing(tiny_llama: Path, corpus: Path, tmp_path: Path) -> None:
    summary = train_causal_lm(tiny_llama, str(corpus), TrainSpec(steps=0), tmp_path / "out")
    assert summary == {"steps": 0, "trained": False}
    assert not (tmp_path / "out").exists()


def test_train_spec_reaches_the_optimizer(tmp_path: Path) -> None:
    """Every optimizer field of a recipe lands in ``TrainingArguments``, defaults included."""
    from fusekit.training.args import to_training_arguments

    spec = TrainSpec(steps=3, lr=2e-3, weight_decay=0.1, adam_beta2=0.95, max_grad_norm=0.5)
    args = to_training_arguments(spec, tmp_path)
    assert (args.learning_rate, args.weight_decay, args.adam_beta2) == (2e-3, 0.1, 0.95)
    assert args.max_grad_norm == 0.5 and args.max_steps == 3
    assert to_training_arguments(TrainSpec(steps=1), tmp_path).adam_beta2 == 0.999
    with pytest.raises(ValueError, match="adam_beta2"):
        TrainSpec(steps=1, adam_beta2=1.0)


def test_packing_without_bos_is_one_plain_stream() -> None:
    from tokenizers import processors

    tok = make_tokenizer()
    tok._tokenizer.post_processor = processors.Sequence([])  # a tokenizer that adds no BOS
    blocks = pack_texts(tok, ["the cat sat", "a dog ran to the house"], seq_len=4)
    plain = tok("the cat sat", add_special_tokens=False)["input_ids"]
    assert blocks[0] == [*plain, 2] and all(1 not in b for b in blocks)


def test_lr_scale_gives_named_parameters_their_own_learning_rate(tmp_path: Path) -> None:
    """One group per (decay, factor); the schedule keeps the factor at every step."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from fusekit.training.args import to_training_arguments
    from fusekit.training.trainer import FusekitTrainer

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2))  # fmt: skip
    ids = torch.randint(0, 50, (4, 8))
    data = [{"input_ids": row, "labels": row} for row in ids]
    from transformers import TrainerCallback

    args = to_training_arguments(TrainSpec(steps=4, lr=1e-3, warmup_steps=1), tmp_path)
    target = model.model.layers[0].post_attention_layernorm.weight
    ratios: list[float] = []  # the scaled group's lr over the others', at every step

    class Watch(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                        **kwargs: Any) -> None:  # fmt: skip
            scaled = [
                g["lr"] for g in optimizer.param_groups if any(p is target for p in g["params"])
            ]
            rest = [
                g["lr"] for g in optimizer.param_groups if all(p is not target for p in g["params"])
            ]
            if rest[0] > 0:
                ratios.extend(lr / other for lr in scaled for other in rest)

    trainer = FusekitTrainer(
        model=model, args=args, train_dataset=data, callbacks=[Watch()],
        lr_scale=lambda name: 100.0 if "post_attention_layernorm" in name else 1.0,
    )  # fmt: skip
    trainer.train()
    assert len(ratios) >= 3 and ratios == pytest.approx([100.0] * len(ratios))
    groups = trainer.optimizer.param_groups
    scaled = [g for g in groups if any(p is model.model.layers[0].post_attention_layernorm.weight
                                       for p in g["params"])]  # fmt: skip
    assert len(scaled) == 1 and len(scaled[0]["params"]) == 1
    others = [g for g in groups if g is not scaled[0]]
    assert scaled[0]["initial_lr"] == pytest.approx(0.1)
    assert all(g["initial_lr"] == pytest.approx(1e-3) for g in others)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_lora_wrapping_prints_no_library_deprecation(tiny_llama: Path) -> None:
    """peft reads a property transformers 5 deprecated; a LoRA run must not show it."""
    import warnings

    from fusekit.training.unit import causal_lm_unit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        causal_lm_unit(tiny_llama, None, None, lora={"r": 2})
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]

"""CALM speed, as ratios measured in one run on this machine.

Decoding (256 new tokens, greedy, batch 1 and 8):
  * composed with per-model KV caches vs composed recomputing the whole prefix each step;
  * composed (cached) vs anchor alone + augment alone (each HF ``generate`` with its cache).
Training (batch 64 x 16 tokens):
  * one composition step (augment forward, anchor forward+backward through Θ_C, optimizer)
    vs anchor forward+backward + augment forward (what the composition cannot avoid);
  * one cross block, forward+backward, with the diagonal mask's one-position path vs
    the same block through full masked attention (128 heads, null key: the
    KV-arithmetic quick-start's setting).

``--real`` measures the same decoding and training ratios on the real pair instead, and
the training step on answers (the last 16 of 128 anchor tokens labelled) with the output
layer run where the loss looks only (``loss_only``, what training does) against the full
output layer, and the same for a LoRA of the anchor (the shared trainer's loss against
``Trainer``'s) (``--real-training``: these training figures alone):
Gemma-3-270M as anchor composed with SmolLM2-135M-Instruct (different tokenizers, so
the augment follows the anchor's decoded text), ``every=6`` (5 layer pairs), batch 1
decoding and a training step on 4 x 128 anchor tokens of library source; needs the
two GGUF packages (docs/real-models.md).

Run: ``python bench/calm.py [--new-tokens 256] [--threads 1] [--real]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timing import best_time


def _llama(layers: int, d: int = 128, vocab: int = 317) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(layers)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def bench_decoding(model: object, new_tokens: int, batch: int) -> dict[str, float]:
    anchor, augment = model.anchor, model.augments[0]
    ids = torch.randint(3, 317, (batch, 16))
    common = dict(max_new_tokens=new_tokens, eos_token_id=None)
    cached = best_time(lambda: model.generate(ids, **common), 2, warmup=True)
    full = best_time(lambda: model.generate(ids, use_cache=False, **common), 1, warmup=True)
    hf = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    alone = best_time(lambda: anchor.generate(ids, **hf), 2, warmup=True) + best_time(
        lambda: augment.generate(ids, **hf), 2, warmup=True
    )
    tokens = batch * new_tokens
    return {
        "cached_tok_s": tokens / cached,
        "recompute_tok_s": tokens / full,
        "alone_tok_s": tokens / alone,
        "cache_speedup": full / cached,
        "composed_over_alone": cached / alone,
    }


def bench_training(model: object, steps: int = 10) -> dict[str, float]:
    from fusekit.training.columns import causal_lm_loss

    ids = torch.randint(3, 317, (64, 16))
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)

    def composed_step() -> None:
        for _ in range(steps):
            loss = model(ids, labels=ids)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()

    anchor, augment = model.anchor, model.augments[0]
    anchor.requires_grad_(True)  # a plain fine-tuning step of the anchor, for reference

    def plain_step() -> None:
        for _ in range(steps):
            with torch.no_grad():
                augment(ids)
            loss = causal_lm_loss(anchor(ids).logits, ids)
            loss.backward()
            anchor.zero_grad()

    composed = best_time(composed_step, 2, warmup=True) / steps
    plain = best_time(plain_step, 2, warmup=True) / steps
    anchor.requires_grad_(False)
    return {
        "composed_step_ms": 1000 * composed,
        "anchor_fb_plus_augment_f_ms": 1000 * plain,
        "ratio": composed / plain,
    }


def bench_diagonal_block(batch: int = 64, length: int = 16, repeat: int = 50) -> dict[str, float]:
    """Forward+backward of one cross block: one-position path vs full masked attention."""
    from fusekit.strategies.calm.composition import CrossBlock

    torch.manual_seed(0)
    fast = CrossBlock(128, 128, 128, kv_norm=True, scale_output=True, null_key=True, diagonal=True)
    full = CrossBlock(128, 128, 128, kv_norm=True, scale_output=True, null_key=True)
    full.load_state_dict(fast.state_dict())
    h, h_aug = torch.randn(batch, length, 128), torch.randn(batch, length, 128)
    visible = torch.eye(length, dtype=torch.bool).expand(batch, -1, -1)

    def step(block: CrossBlock) -> Callable[[], object]:
        def run() -> None:
            for _ in range(repeat):
                k, v = block.memory(h_aug)
                block(h, k, v, visible).sum().backward()

        return run

    t_fast, t_full = best_time(step(fast), warmup=True), best_time(step(full), warmup=True)
    return {"fast_ms": 1000 * t_fast / repeat, "full_ms": 1000 * t_full / repeat}


PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'


def bench_real(new_tokens: int | None) -> None:
    """Decoding and training ratios with Gemma-3-270M + SmolLM2-135M (cross-tokenizer);
    ``new_tokens=None`` measures training only."""
    from real_models import folders

    from fusekit.strategies.calm.build import compose_from_paths

    paths = folders()
    model = compose_from_paths(paths["gemma3"], [paths["smollm2"]], every=6)
    for block in (b for bl in model.composition.blocks for b in bl):  # not the identity
        torch.nn.init.normal_(block.o_proj.weight, std=0.02)
    print(f"anchor Gemma-3-270M, augment SmolLM2-135M, "
          f"{sum(len(a.pairs) for a in model.composition_config.augments)} layer pairs")  # fmt: skip
    if new_tokens is not None:
        _real_decoding(model, new_tokens)
    _real_training(model)


def _real_decoding(model: Any, new_tokens: int) -> None:
    anchor, augment = model.anchor, model.augments[0]
    a_tok, g_tok = model.anchor_tokenizer, model.augment_tokenizers[0]
    a_ids = a_tok(PROMPT, return_tensors="pt").input_ids
    g_ids = g_tok(PROMPT, return_tensors="pt").input_ids
    composed = best_time(
        lambda: model.generate(a_ids, max_new_tokens=new_tokens, eos_token_id=[]), 1, warmup=True
    )
    out = model.generate(a_ids, max_new_tokens=new_tokens, eos_token_id=[])
    text = a_tok.decode(out[0, a_ids.shape[1] :])
    hf = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    alone_a = best_time(lambda: anchor.generate(a_ids, **hf), 1, warmup=True)
    # the augment decodes as many of its own tokens as it read of the composed text
    aug_new = len(g_tok(PROMPT + text, add_special_tokens=False).input_ids) - g_ids.shape[1]
    hf_g = dict(hf, max_new_tokens=max(1, aug_new), min_new_tokens=max(1, aug_new))
    alone_g = best_time(lambda: augment.generate(g_ids, **hf_g), 1, warmup=True)
    print(f"decode {new_tokens} tokens, batch 1: composed {composed:.2f} s vs anchor "
          f"{alone_a:.2f} s + augment {alone_g:.2f} s ({aug_new} tokens) -> composed/alone "
          f"x{composed / (alone_a + alone_g):.2f}")  # fmt: skip


def _real_training(model: Any) -> None:
    from fusekit.strategies.calm.collate import CalmCollator, encode_offsets_example
    from fusekit.training.columns import causal_lm_loss

    anchor, augment = model.anchor, model.augments[0]
    a_tok, g_tok = model.anchor_tokenizer, model.augment_tokenizers[0]
    source = Path(argparse.__file__).read_text(encoding="utf-8")
    texts = [source[i * 600 : (i + 1) * 600] for i in range(4)]
    collate = CalmCollator(a_tok.pad_token_id or 0, [g_tok.pad_token_id or 0])
    shared = model.shared_tokenizer
    batch = collate([encode_offsets_example({"text": t}, a_tok, [g_tok], shared, 128)
                     for t in texts])  # fmt: skip
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)

    def composed_step() -> None:
        loss = model(**batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    aug = batch["augment_inputs"][0]
    anchor.requires_grad_(True)

    def plain_step() -> None:
        with torch.no_grad():
            augment(input_ids=aug["input_ids"], attention_mask=aug["attention_mask"])
        loss = causal_lm_loss(anchor(batch["input_ids"]).logits, batch["labels"])
        loss.backward()
        anchor.zero_grad()

    t_composed = best_time(composed_step, 2, warmup=True)
    t_plain = best_time(plain_step, 2, warmup=True)
    anchor.requires_grad_(False)
    print(f"train step (4 x {batch['input_ids'].shape[1]} anchor tokens): composed "
          f"{1000 * t_composed:.0f} ms vs anchor f+b + augment f {1000 * t_plain:.0f} ms "
          f"-> ratio x{t_composed / t_plain:.2f}")  # fmt: skip
    answers = dict(batch, labels=batch["labels"].clone())
    answers["labels"][:, : answers["labels"].shape[1] - 16] = -100  # an answer: 16 tokens

    def answer_step(loss_only: bool) -> Callable[[], None]:
        def step() -> None:
            loss = model(**answers, loss_only=loss_only)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    t_sparse = best_time(answer_step(True), 2, warmup=True)
    t_full = best_time(answer_step(False), 2, warmup=True)
    print(f"train step on answers (16 of {answers['labels'].shape[1]} tokens labelled): "
          f"output layer where scored {1000 * t_sparse:.0f} ms vs everywhere "
          f"{1000 * t_full:.0f} ms -> x{t_full / t_sparse:.2f} faster")  # fmt: skip
    _lora_answers(anchor, answers, sum(p.numel() for p in model.trainable_parameters()))


def _lora_answers(anchor: Any, answers: dict[str, Any], budget: int) -> None:
    """CALM's LoRA control on the same answers: the shared trainer's loss (output layer
    at the labelled columns) against ``Trainer``'s own (the full output layer)."""
    import tempfile

    from transformers import Trainer

    from fusekit.recipe import TrainSpec
    from fusekit.strategies.calm.baselines import lora_model
    from fusekit.training.args import to_training_arguments
    from fusekit.training.trainer import FusekitTrainer

    lora, info = lora_model(anchor, budget)
    lora.train()
    inputs = {k: answers[k] for k in ("input_ids", "attention_mask", "labels")}
    with tempfile.TemporaryDirectory() as tmp:
        args = to_training_arguments(TrainSpec(steps=1), Path(tmp))
        trainer = FusekitTrainer(model=lora, args=args, train_dataset=[])

    def step(compute: Callable[..., Any]) -> Callable[[], None]:
        def run() -> None:
            compute(trainer, lora, inputs).backward()
            lora.zero_grad(set_to_none=True)

        return run

    t_kept = best_time(step(FusekitTrainer.compute_loss), 2, warmup=True)
    t_full = best_time(step(Trainer.compute_loss), 2, warmup=True)
    print(f"LoRA step of the anchor (rank {info['rank']}) on the same answers: fusekit's loss "
          f"{1000 * t_kept:.0f} ms vs Trainer's {1000 * t_full:.0f} ms -> x{t_full / t_kept:.2f} "
          "faster")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--real", action="store_true", help="Gemma-3-270M + SmolLM2-135M")
    parser.add_argument("--real-training", action="store_true", help="--real, training only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.real or args.real_training:
        bench_real(None if args.real_training else args.new_tokens)
        return
    from fusekit.strategies.calm.build import compose

    model = compose(_llama(4), [_llama(8)], pairs=[[(0, -1), (1, 0), (3, 1), (7, 2)]])
    for block in (b for bl in model.composition.blocks for b in bl):  # not the identity
        torch.nn.init.normal_(block.o_proj.weight, std=0.02)
    print(f"anchor 4 x d128, augment 8 x d128, 4 layer pairs, {args.threads} thread(s)")
    for batch in (1, 8):
        r = bench_decoding(model, args.new_tokens, batch)
        print(
            f"decode batch {batch}: cached {r['cached_tok_s']:.0f} tok/s, recompute "
            f"{r['recompute_tok_s']:.0f} tok/s -> cache speed-up x{r['cache_speedup']:.1f}; "
            f"anchor+augment alone {r['alone_tok_s']:.0f} tok/s -> composed/alone time "
            f"x{r['composed_over_alone']:.2f}"
        )
    r = bench_training(model)
    print(
        f"train step: composed {r['composed_step_ms']:.0f} ms vs anchor f+b + augment f "
        f"{r['anchor_fb_plus_augment_f_ms']:.0f} ms -> ratio x{r['ratio']:.2f}"
    )
    r = bench_diagonal_block()
    print(
        f"diagonal cross block f+b (64 x 16, 128 heads): one-position path "
        f"{r['fast_ms']:.2f} ms vs full attention {r['full_ms']:.2f} ms -> "
        f"x{r['full_ms'] / r['fast_ms']:.1f} faster"
    )


if __name__ == "__main__":
    main()

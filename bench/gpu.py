"""fusekit's speed ratios in one short run on a GPU (or the CPU), each against its baseline.

Prepared for a GPU machine that may be lent for a few minutes: nothing to download,
random weights in the shapes of the real pair (Gemma-3-270M as anchor and source,
SmolLM2-135M as augment and target; speed does not depend on the weights' values),
every ratio against a baseline timed in the same process:

* CALM decoding: cached greedy decoding of the composition vs the anchor and the
  augment each decoding alone with their own caches (``generate``) — target 1.3x
  (token-aligned: the augment reads the anchor's ids, with the anchor's vocabulary);
* CALM training: one composition step vs anchor forward+backward plus augment
  forward, the work the composition cannot avoid — target 1.3x;
* FuseLLM online: one step with the source run without gradients (top-k only at the
  aligned positions), fusion and the fused loss vs a plain CLM step of the target —
  target 1.3x.

Surgery (depth up-scaling, block expansion) is disk-bound and measured by
``bench/structural.py``, not here.

Run: ``python bench/gpu.py [--device cuda] [--dtype bfloat16] [--size real] [--json OUT]``;
``--device cpu --size tiny`` is what the test suite runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"batch": 2, "prompt": 8, "new_tokens": 8, "seq": 32, "steps": 2},
    "real": {"batch": 8, "prompt": 64, "new_tokens": 128, "seq": 512, "steps": 5},
}


#: (Gemma-3-shaped, SmolLM2-shaped) config fields per size; "real" is the published models.
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "real": (
        {"vocab_size": 262144, "hidden_size": 640, "intermediate_size": 2048,
         "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1,
         "head_dim": 256, "sliding_window": 512, "max_position_embeddings": 32768},
        {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
         "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
         "max_position_embeddings": 8192},
    ),
    "tiny": (
        {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1,
         "head_dim": 32, "sliding_window": 16, "max_position_embeddings": 256},
        {"vocab_size": 384, "hidden_size": 48, "intermediate_size": 96,
         "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 256},
    ),
}  # fmt: skip


def configs(size: str) -> tuple[Any, Any]:
    """(anchor/source config, augment/target config) for ``size``."""
    from transformers import Gemma3TextConfig, LlamaConfig

    special = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    gemma, smol = SHAPES[size]
    return (
        Gemma3TextConfig(**gemma, **special),
        LlamaConfig(**smol, tie_word_embeddings=True, **special),
    )


def build(config: Any, device: str, dtype: torch.dtype, seed: int) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()


def timed(fn: Callable[[], object], device: str, repeat: int = 3) -> float:
    """Fastest of ``repeat`` calls after one warm-up, waiting for the device each time."""

    def wait() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    wait()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        wait()
        best = min(best, time.perf_counter() - start)
    return best


def calm_ratios(anchor: Any, augment: Any, size: dict[str, Any], device: str) -> dict[str, float]:
    from fusekit.strategies.calm.build import compose
    from fusekit.strategies.calm.modeling import causal_lm_loss

    composed = compose(anchor, [augment], every=3)
    for block in (b for blocks in composed.composition.blocks for b in blocks):
        torch.nn.init.normal_(block.o_proj.weight, std=0.02)  # not the identity
    composed.composition.to(device=device, dtype=next(anchor.parameters()).dtype)
    vocab = anchor.config.vocab_size
    ids = torch.randint(3, vocab, (size["batch"], size["prompt"]), device=device)
    n = size["new_tokens"]
    hf = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        cached = timed(lambda: composed.generate(ids, max_new_tokens=n, eos_token_id=None), device)
        alone = timed(lambda: anchor.generate(ids, **hf), device) + timed(
            lambda: augment.generate(ids, **hf), device
        )
    train_ids = torch.randint(3, vocab, (size["batch"], size["seq"]), device=device)
    opt = torch.optim.AdamW(composed.trainable_parameters(), lr=1e-4)

    def composed_step() -> None:
        loss = composed(train_ids, labels=train_ids)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    def parts_step() -> None:
        with torch.no_grad():
            augment(input_ids=train_ids)
        anchor.requires_grad_(True)
        causal_lm_loss(anchor(input_ids=train_ids).logits, train_ids).backward()
        anchor.zero_grad(set_to_none=True)
        anchor.requires_grad_(False)

    step = timed(composed_step, device, size["steps"])
    parts = timed(parts_step, device, size["steps"])
    return {
        "calm_decode_s": cached,
        "calm_decode_parts_s": alone,
        "calm_decode_ratio": cached / alone,
        "calm_step_s": step,
        "calm_step_parts_s": parts,
        "calm_step_ratio": step / parts,
    }


def fusellm_ratios(source: Any, target: Any, size: dict[str, Any], device: str) -> dict[str, float]:
    from fusekit.strategies.fusellm.extract import source_outputs
    from fusekit.strategies.fusellm.fusion import FusionConfig, SourceBatch, fuse
    from fusekit.strategies.fusellm.losses import clm_loss, fused_objective, next_token_mask

    batch, seq = size["batch"], size["seq"]
    t_vocab, s_vocab = target.config.vocab_size, source.config.vocab_size
    ids = torch.randint(3, t_vocab, (batch, seq), device=device)
    source_ids = torch.randint(3, s_vocab, (batch, seq), device=device)
    mask = torch.ones_like(source_ids)
    # a token-for-token alignment with a few target positions unmatched, as MinED leaves
    align = torch.arange(seq, device=device).expand(batch, -1).clone()
    align[:, ::7] = -1
    vmap = torch.randint(0, t_vocab, (s_vocab,), device=device)
    target.train()
    opt = torch.optim.AdamW(target.parameters(), lr=1e-5)

    def clm_step() -> None:
        loss = clm_loss(target(input_ids=ids).logits, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def fused_step() -> None:
        out = source_outputs(source, source_ids, mask, 10, positions=align)
        stored = SourceBatch(
            topk_ids=out["topk_ids"], topk_logits=out["topk_logits"],
            align=torch.where(align >= 0, torch.arange(seq, device=device), -1),
            nats=out["nats"], n_pred=out["n_pred"], n_bytes=4 * out["n_pred"],
        )  # fmt: skip
        labels = ids
        sparse = fuse([stored], [vmap], ids, t_vocab, FusionConfig(),
                      mask=next_token_mask(labels))  # fmt: skip
        loss, _ = fused_objective(target(input_ids=ids).logits, labels, sparse, 0.9)
        opt.zero_grad()
        loss.backward()
        opt.step()

    clm = timed(clm_step, device, size["steps"])
    fused = timed(fused_step, device, size["steps"])
    target.eval()
    return {"fusellm_step_s": fused, "clm_step_s": clm, "fusellm_step_ratio": fused / clm}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--size", default="real", choices=sorted(SIZES))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    size = SIZES[args.size]
    big, small = configs(args.size)
    anchor = build(big, args.device, dtype, seed=0)
    augment = build(small, args.device, dtype, seed=1)
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "dtype": args.dtype,
        "size": args.size,
        "torch": torch.__version__,
        **size,
    }
    figures.update(fusellm_ratios(anchor, augment, size, args.device))
    # CALM's token-aligned path: the augment reads the anchor's ids, so it gets the
    # anchor's vocabulary (it never forms logits; the cross-tokenizer path re-tokenises
    # on the host each step and is measured on the real pair by bench/calm.py)
    shared = small.__class__(**{**small.to_dict(), "vocab_size": big.vocab_size})
    del augment
    figures.update(calm_ratios(anchor, build(shared, args.device, dtype, 1), size, args.device))
    print(f"{figures['device']}, {args.dtype}, {args.size} shapes (batch {size['batch']})")
    print(
        f"CALM decode {size['new_tokens']} tokens: composed {figures['calm_decode_s']:.3f} s "
        f"vs parts {figures['calm_decode_parts_s']:.3f} s -> x{figures['calm_decode_ratio']:.2f}"
    )
    print(
        f"CALM train step {size['seq']} tokens: {figures['calm_step_s'] * 1e3:.1f} ms vs parts "
        f"{figures['calm_step_parts_s'] * 1e3:.1f} ms -> x{figures['calm_step_ratio']:.2f}"
    )
    print(f"FuseLLM online step: {figures['fusellm_step_s'] * 1e3:.1f} ms vs CLM "
          f"{figures['clm_step_s'] * 1e3:.1f} ms -> x{figures['fusellm_step_ratio']:.2f}")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()

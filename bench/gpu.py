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

Surgery's own speed (depth up-scaling, block expansion) is disk-bound and measured by
``bench/structural.py``, not here.

Two checks follow the ratios, on the same device:

* CALM cached == uncached: greedy decoding of the composition (one left-padded row)
  with and without its KV cache must give the same tokens; the script exits non-zero
  otherwise. It runs in float32 whatever ``--dtype`` is, so that a difference means a
  cache bug, not bf16 rounding flipping a near-tie between two random logits;
* memory: both random models are saved as model folders with an offline tokenizer,
  and each strategy (``bench/memory.py``'s recipes) trains for two short steps with
  gradient checkpointing, bf16 autocast on a GPU (fp32 on the CPU, where bf16 autocast
  is slow and the test suite only checks that the figures exist), in a fresh process
  per strategy; its measured peak is set against the dry run's estimate.

Run: ``python bench/gpu.py [--device cuda] [--dtype bfloat16] [--size real] [--json OUT]``;
``--device cpu --size tiny`` is what the test suite runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"batch": 2, "prompt": 8, "new_tokens": 8, "seq": 32, "steps": 2},
    "real": {"batch": 8, "prompt": 64, "new_tokens": 128, "seq": 512, "steps": 5},
}

#: The memory section's runs: two steps of short rows are enough for the peak (the
#: optimizer state exists after the first step) and keep six real-size runs to minutes.
#: ``groups``/``remove``/``every`` as bench/memory.py uses for the published models.
MEMORY: dict[str, dict[str, Any]] = {
    "tiny": {"batch": 2, "seq": 32, "steps": 2, "groups": 2, "remove": 1, "every": 2},
    "real": {"batch": 4, "seq": 256, "steps": 2, "groups": 6, "remove": 4, "every": 6},
}

#: Entries of the memory section's tokenizer: below both models' embeddings at every size.
TOKENIZER_VOCAB = 384

#: The built-in corpus the memory section trains on (no download).
MEMORY_DATA = {"task": "english", "max_chars": 20000}


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
    from fusekit.training.columns import causal_lm_loss

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


def calm_cached_equals_uncached(
    anchor: Any, augment: Any, size: dict[str, Any], device: str
) -> bool:
    """Whether the composition's greedy decoding gives the same tokens with and without
    its KV cache, on ``device``. The models are cast to float32 in place first, so only
    a cache bug (positions, masks, the augment's states) can make the two differ."""
    from fusekit.strategies.calm.build import compose

    composed = compose(anchor.float(), [augment.float()], every=3)
    torch.manual_seed(2)
    for block in (b for blocks in composed.composition.blocks for b in blocks):
        torch.nn.init.normal_(block.o_proj.weight, std=0.02)  # not the identity
    composed.composition.to(device=device, dtype=torch.float32)
    ids = torch.randint(3, anchor.config.vocab_size, (2, size["prompt"]), device=device)
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0  # a left-padded row: the cache must respect the mask
    kw = {"attention_mask": mask, "max_new_tokens": size["new_tokens"], "eos_token_id": None}
    with torch.no_grad():
        cached = composed.generate(ids, **kw)
        uncached = composed.generate(ids, use_cache=False, **kw)
    return bool(cached.tolist() == uncached.tolist())


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


def load_memory_bench() -> ModuleType:
    """``bench/memory.py`` (a script, not a package): its recipes and its per-process peak."""
    path = Path(__file__).resolve().with_name("memory.py")
    spec = importlib.util.spec_from_file_location("bench_memory", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_pair(size: str, root: Path) -> tuple[str, str]:
    """The two random models of ``size`` as model folders (safetensors, with a tokenizer).

    Both share one byte-level tokenizer trained in-process on the built-in corpus, no
    larger than either embedding, so every id it emits is a row of both models."""
    from transformers import AutoModelForCausalLM

    from fusekit.tasks.corpora import domain_documents
    from fusekit.tasks.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(
        "bpe", domain_documents("english", max_chars=MEMORY_DATA["max_chars"]), TOKENIZER_VOCAB
    )
    folders = []
    for name, config, seed in zip(("gemma3", "smollm2"), configs(size), (0, 1), strict=True):
        torch.manual_seed(seed)
        folder = root / name
        AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        folders.append(str(folder))
    return folders[0], folders[1]


def memory_precision(device: str) -> str:
    """bf16 autocast on a GPU, as training there runs; fp32 on the CPU, where bf16
    autocast is slow and the figures only need to exist."""
    return "fp32" if device == "cpu" else "bf16"


def memory_ratios(size: str, device: str) -> dict[str, dict[str, Any]]:
    """Per strategy: the dry run's training-memory estimate, the measured peak, their ratio.

    Each run is a fresh process (``bench/memory.py --child``), so no peak carries over;
    the peak is ``torch.cuda.max_memory_allocated`` on a GPU and the resident set above
    the idle interpreter on the CPU. Single-model strategies train the Gemma-shaped
    model; CALM composes it with the SmolLM2-shaped one, which FuseLLM trains from it.
    """
    memory = load_memory_bench()
    shape = MEMORY[size]
    # CPU runs hide the GPU so the children train where the figures say they did
    hidden = {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, hidden):
        gemma, smol = save_pair(size, Path(tmp))
        for strategy in memory.STRATEGIES:
            model, other = (smol, gemma) if strategy == "fusellm" else (gemma, smol)
            rec = memory.recipe(strategy, model, other, MEMORY_DATA, shape)
            rec["train"]["gradient_checkpointing"] = True
            rec["train"]["precision"] = memory_precision(device)
            estimate = memory.estimate(rec)["total"]
            measured = memory.measure(rec, torch.get_num_threads())["measured"]
            rows[strategy] = {"estimate": estimate, "measured": measured,
                              "ratio": estimate / max(measured, 1)}  # fmt: skip
    return rows


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
    augment = build(shared, args.device, dtype, 1)
    figures.update(calm_ratios(anchor, augment, size, args.device))
    figures["calm_cached_equals_uncached"] = calm_cached_equals_uncached(
        anchor, augment, size, args.device
    )
    del anchor, augment
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()  # the memory section's children need the device to themselves
    figures["memory"] = memory_ratios(args.size, args.device)
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
    same = figures["calm_cached_equals_uncached"]
    print(f"CALM cached == uncached greedy decoding (float32): {'yes' if same else 'NO'}")
    shape = MEMORY[args.size]
    print(f"Training memory, {shape['steps']} steps of {shape['batch']} x {shape['seq']} tokens, "
          f"{memory_precision(args.device)}, gradient checkpointing:")  # fmt: skip
    print("| strategy | estimate | measured | estimate / measured |")
    print("|---|---:|---:|---:|")
    for strategy, row in figures["memory"].items():
        print(f"| {strategy} | {row['estimate'] / 1e6:,.0f} MB | {row['measured'] / 1e6:,.0f} MB "
              f"| {row['ratio']:.2f} |")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    if not main()["calm_cached_equals_uncached"]:
        sys.exit("CALM decoding with the KV cache differs from decoding without it")

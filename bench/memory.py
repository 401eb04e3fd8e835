"""The dry run's training-step memory estimate against the measured peak, per strategy.

For each strategy on each model, one child process imports fusekit, notes its
resident memory (the idle interpreter with torch and transformers loaded), runs
the recipe through ``fusekit.api.run`` for a few steps with no evaluation, and
reports its peak: ``ru_maxrss`` minus that idle figure on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU.  The parent prints each beside
``fusekit.api.plan``'s estimate for the same recipe, and their ratio.

Models: ``--models real`` is SmolLM2-135M-Instruct and Gemma-3-270M from their GGUF
packages (docs/real-models.md; CALM and FuseLLM pair each with the other);
``--models tiny`` builds two small Llamas in-process (what the test suite runs).

Run: ``python bench/memory.py [--models real] [--checkpointing both] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

STRATEGIES = ("finetune", "lora", "block_expansion", "depth_upscaling", "calm", "fusellm")


def recipe(strategy: str, model: str, other: str, data: Any, shape: dict[str, Any]) -> dict:
    """The recipe measured: ``model`` trained (or composed, or fused into) on ``data``."""
    train = {"data": data, "steps": shape["steps"], "batch_size": shape["batch"],
             "seq_len": shape["seq"], "save_steps": 1000, "log_steps": 1}  # fmt: skip
    if strategy == "finetune":
        return {"strategy": "finetune", "model": model, "train": train}
    if strategy == "lora":
        return {"strategy": "finetune", "model": model, "lora": {"r": 16}, "train": train}
    if strategy == "block_expansion":
        return {"strategy": "block_expansion", "model": model, "groups": shape["groups"],
                "train": train}  # fmt: skip
    if strategy == "depth_upscaling":
        return {"strategy": "depth_upscaling", "model": model, "remove": shape["remove"],
                "train": train}  # fmt: skip
    if strategy == "calm":
        return {
            "strategy": "calm",
            "anchor": model,
            "augment": [other],
            "every": shape["every"],
            "data": {"train": data},
            "train": {k: v for k, v in train.items() if k != "data"},
        }
    return {"strategy": "fusellm", "target": model, "sources": [other], "train": train}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one recipe in this process; the training's peak beyond the idle interpreter.

    The peak is read when training ends, before the save: safetensors serialises
    each tensor into a bytes copy, which for a LoRA (tiny optimizer state) would
    be the run's peak, and the estimate is of a training step.
    """
    import psutil
    import torch
    from transformers import TrainerCallback

    import fusekit.api
    import fusekit.training.fit

    idle = psutil.Process().memory_info().rss
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    peaks: list[int] = []

    class Peak(TrainerCallback):
        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            peaks.append(torch.cuda.max_memory_allocated() if cuda else rss - idle)

    with tempfile.TemporaryDirectory() as tmp:
        fusekit.api.run(spec["recipe"], output=Path(tmp) / "out", callbacks=[Peak()])
    return {"measured": int(max(peaks)), "idle": int(idle), "device": "cuda" if cuda else "cpu"}


def estimate(rec: dict[str, Any]) -> dict[str, int]:
    from fusekit.api import plan

    return plan(rec)["training_memory_bytes"]


def measure(rec: dict[str, Any], threads: int) -> dict[str, Any]:
    """``child`` in a fresh process: one process per figure, so no peak carries over."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FUSEKIT_LOG_LEVEL": "warning"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps({"recipe": rec})],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {rec['strategy']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def models(kind: str, root: Path) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Model folders and, per model, the shape of the measured run."""
    if kind == "real":
        from real_models import folders

        found = folders()
        shapes = {
            "smollm2": {"groups": 6, "remove": 8, "every": 6},
            "gemma3": {"groups": 6, "remove": 4, "every": 6},
        }
        return {k: str(v) for k, v in found.items()}, shapes
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pipeline.conftest import save_llama

    tiny = {"a": str(save_llama(root / "a", 0)), "b": str(save_llama(root / "b", 1))}
    return tiny, {"a": {"groups": 2, "remove": 1, "every": 2},
                  "b": {"groups": 2, "remove": 1, "every": 2}}  # fmt: skip


#: Published shapes (hidden, intermediate, layers, heads, kv heads, vocab, tied embeddings).
SHAPES = {
    "Llama-3.2-1B": (2048, 8192, 16, 32, 8, 128256, True),
    "Llama-3.2-3B": (3072, 8192, 28, 24, 8, 128256, True),
    "Llama-3.1-8B": (4096, 14336, 32, 32, 8, 128256, False),
    "Llama-2-13B": (5120, 13824, 40, 40, 40, 32000, False),
    "Llama-3.1-70B": (8192, 28672, 80, 64, 8, 128256, False),
}

#: (label, train fields, bytes per held parameter, LoRA, FSDP ranks)
COMBOS = [
    ("AdamW, fp32 masters", {}, 4, False, 1),
    ("+ checkpointing", {"gradient_checkpointing": True}, 4, False, 1),
    ("+ checkpointing, 8-bit AdamW", {"gradient_checkpointing": True,
                                      "optim": "adamw_bnb_8bit"}, 4, False, 1),
    ("+ checkpointing, pure bf16", {"gradient_checkpointing": True}, 2, False, 1),
    ("LoRA r16 on a bf16 base + checkpointing", {"gradient_checkpointing": True}, 2, True, 1),
    ("+ checkpointing, FSDP2 over 8 GPUs", {"gradient_checkpointing": True}, 4, False, 8),
]  # fmt: skip


def fit_table(seq: int = 2048) -> list[dict[str, Any]]:
    """The dry run's estimate for published model shapes under each combination of
    settings, at one sequence of ``seq`` tokens per GPU in bf16 autocast: what fits
    on one 24 GB or 80 GB GPU (no runtime part: a GPU's peak holds tensors only)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from fusekit.estimates import _facts, sharded, training_memory
    from fusekit.recipe.common import TrainSpec

    rows = []
    for name, (h, i, layers, heads, kv, vocab, tied) in SHAPES.items():
        config = LlamaConfig(hidden_size=h, intermediate_size=i, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv,
                             vocab_size=vocab, tie_word_embeddings=tied)  # fmt: skip
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        facts = _facts(name, config, model, False)
        lora = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear"))
        adapters = int(lora.get_nb_trainable_parameters()[0])
        for label, fields, size, with_lora, ranks in COMBOS:
            # model_copy: an estimate needs no optimizer package installed
            train = TrainSpec(steps=1, batch_size=1, seq_len=seq, precision="bf16").model_copy(
                update=fields
            )
            parts = training_memory(
                held=[(facts, size)], trainable=adapters if with_lora else facts.parameters,
                backprop=[facts], forward_only=[], train=train,
                trained_bytes=4 if with_lora else size, alternatives=False,
            )  # fmt: skip
            parts["runtime"] = 0
            parts["total"] = sum(v for k, v in parts.items() if k != "total")
            if ranks > 1:
                parts = sharded(parts, {"distributed_type": "FSDP", "num_processes": ranks})
            rows.append({"model": name, "parameters": facts.parameters, "setting": label,
                         "total": parts["total"]})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", choices=["real", "tiny"], default="real")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="both")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, help="tokens a row (default 128; 2,048 for --fit-table)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--measured", type=Path,
        help="the JSON of an earlier run: its measured peaks are kept (what a run allocates "
        "does not change with the estimate's code) and only the estimates are recomputed",
    )  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fit-table",
        action="store_true",
        help="print what fits on one 24/80 GB GPU, from the estimate alone",
    )
    args = parser.parse_args(argv)
    if args.fit_table:
        rows = fit_table(args.seq or 2048)
        settings = list(dict.fromkeys(r["setting"] for r in rows))
        print("| model | " + " | ".join(settings) + " |")
        print("|---|" + "---:|" * len(settings))
        for name in SHAPES:
            cells = [r for r in rows if r["model"] == name]
            marks = []
            for r in cells:
                fits = "/".join(str(g) for g in (24, 80) if r["total"] <= g * 1e9)
                marks.append(f"{r['total'] / 1e9:.0f} GB" + (f" (fits {fits})" if fits else ""))
            print(f"| {name} | " + " | ".join(marks) + " |")
        return rows
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    rows: list[dict[str, Any]] = []
    earlier = {
        (r["model"], r["strategy"], r["checkpointing"]): {
            k: r[k] for k in ("measured", "idle", "device")
        }
        for r in (json.loads(args.measured.read_text()) if args.measured else [])
    }
    with tempfile.TemporaryDirectory() as tmp:
        folders, shapes = models(args.models, Path(tmp))
        data = {"task": "english", "max_chars": 20000}
        names = list(folders)
        switches = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
        print("| model | strategy | checkpointing | estimate | measured | estimate / measured |")
        print("|---|---|---|---:|---:|---:|")
        for name in names:
            other = folders[names[1 - names.index(name)]]
            shape = {**shapes[name], "batch": args.batch, "seq": args.seq or 128,
                     "steps": args.steps}  # fmt: skip
            for strategy in args.strategies.split(","):
                for on in switches:
                    rec = recipe(strategy, folders[name], other, data, shape)
                    rec["train"]["gradient_checkpointing"] = on
                    est = estimate(rec)
                    key = (name, strategy, on)
                    got = earlier[key] if key in earlier else measure(rec, args.threads)
                    row = {"model": name, "strategy": strategy, "checkpointing": on,
                           "estimate": est["total"], "parts": est, **got,
                           "ratio": est["total"] / max(got["measured"], 1)}  # fmt: skip
                    rows.append(row)
                    print(f"| {name} | {strategy} | {'on' if on else 'off'} | "
                          f"{est['total'] / 1e6:,.0f} MB | {got['measured'] / 1e6:,.0f} MB | "
                          f"{row['ratio']:.2f} |", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()

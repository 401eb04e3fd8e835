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


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", choices=["real", "tiny"], default="real")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="both")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folders, shapes = models(args.models, Path(tmp))
        data = {"task": "english", "max_chars": 20000}
        names = list(folders)
        switches = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
        print("| model | strategy | checkpointing | estimate | measured | estimate / measured |")
        print("|---|---|---|---:|---:|---:|")
        for name in names:
            other = folders[names[1 - names.index(name)]]
            shape = {**shapes[name], "batch": args.batch, "seq": args.seq, "steps": args.steps}
            for strategy in args.strategies.split(","):
                for on in switches:
                    rec = recipe(strategy, folders[name], other, data, shape)
                    rec["train"]["gradient_checkpointing"] = on
                    est = estimate(rec)
                    got = measure(rec, args.threads)
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

"""From-scratch models: a recipe's ``from_scratch`` spec, trained once and cached.

A from-scratch spec (``{from_scratch: {task: ..., hidden_size: ..., steps: ...}}``)
is trained once on a built-in task and cached, keyed by the spec, under
``$FUSEKIT_CACHE`` (default ``~/.cache/fusekit``).  This is what lets the
quick-start recipes fuse real, trained parents on any laptop with no downloads.
The cached folder is an ordinary Hugging Face model folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.io.cache import cache_root
from fusekit.io.output import atomic_output
from fusekit.io.provenance import write_provenance
from fusekit.recipe.common import ScratchSpec, TaskData, TrainSpec
from fusekit.tasks import KV_TASKS, task_tokenizer
from fusekit.training.unit import train_causal_lm
from fusekit.version import __version__


def train_missing(specs: list[ScratchSpec]) -> None:
    """Train the specs not yet cached, side by side when the cores allow it.

    A quick-start trains two or more tiny parents before it fuses them, each on one
    thread when run with ``OMP_NUM_THREADS=1``.  When the cores allow it (threads per
    model × models to train ≤ cores), they train in parallel worker processes, which
    run exactly the same computation as training them one after the other (each
    process seeds itself from its spec) and take the time of the longest one.  The
    rest train (or are found cached) when ``materialize`` is called for them.
    """
    pending: dict[str, ScratchSpec] = {}
    for spec in specs:
        if not _is_cached(spec):
            pending.setdefault(scratch_key(spec), spec)
    if len(pending) > 1 and _parallel_slots() >= len(pending):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import torch

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(pending), mp_context=context) as pool:
            threads = torch.get_num_threads()
            jobs = [pool.submit(_materialize_in_worker, s, threads) for s in pending.values()]
            for job in jobs:
                job.result()


def _parallel_slots() -> int:
    """How many one-model trainings fit on this machine's cores at the current thread count."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) // max(1, torch.get_num_threads())


def _materialize_in_worker(spec: ScratchSpec, threads: int) -> Path:
    """Worker-process entry point: train one from-scratch spec at the parent's thread count."""
    import torch

    torch.set_num_threads(threads)  # the parent's count, however it was set
    log.library_bars_off()
    return materialize(spec)


def _is_cached(spec: ScratchSpec) -> bool:
    """A complete cached model: ``fusekit.json`` is written last, inside the atomic folder."""
    return (scratch_folder(spec) / "fusekit.json").is_file()


def scratch_key(spec: ScratchSpec) -> str:
    """A short content key of the spec (and the fusekit version that trains it)."""

    dump = spec.model_dump(mode="json")
    for late in ("weight_decay", "adam_beta2"):  # unset: the key of specs written before them
        if dump.get(late) is None:
            dump.pop(late, None)
    payload = json.dumps({"v": __version__, "spec": dump}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def scratch_folder(spec: ScratchSpec) -> Path:
    name = f"{spec.task}-{spec.arch}-d{spec.hidden_size}-l{spec.layers}-{scratch_key(spec)}"
    return cache_root() / "models" / name


def _tokenizer(spec: ScratchSpec) -> Any:

    if spec.task in KV_TASKS:
        return task_tokenizer(spec.task, kv=spec.kv)
    kind = None if spec.tokenizer == "auto" else spec.tokenizer
    return task_tokenizer(spec.task, vocab_size=spec.vocab_size, kind=kind)


def _config(spec: ScratchSpec, tokenizer: Any) -> Any:
    from transformers import GPT2Config, LlamaConfig, Qwen3Config

    vocab = len(tokenizer)
    inter = spec.intermediate_size or 4 * spec.hidden_size
    kv_heads = spec.kv_heads or spec.heads
    special = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if spec.arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab, n_embd=spec.hidden_size, n_layer=spec.layers, n_head=spec.heads,
            n_inner=inter, n_positions=max(512, spec.seq_len), **special,
        )  # fmt: skip
    cls = Qwen3Config if spec.arch == "qwen3" else LlamaConfig
    # keyword arguments of the config, like ``special`` (Llama derives head_dim itself)
    extra: dict[str, Any] = (
        {"head_dim": spec.hidden_size // spec.heads} if spec.arch == "qwen3" else {}
    )
    return cls(
        vocab_size=vocab, hidden_size=spec.hidden_size, intermediate_size=inter,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=kv_heads, max_position_embeddings=max(512, spec.seq_len),
        tie_word_embeddings=True, **extra, **special,
    )  # fmt: skip


_SCRATCH_CONFIGS: dict[str, Any] = {}


def scratch_config(spec: ScratchSpec) -> Any:
    """The config a from-scratch model will have, without training it (for plans).

    Its vocabulary size comes from the task tokenizer, trained in-process in about
    a second; the model itself is not built. A compare file's dry run plans the
    same parent for every run, so each spec's config is made once per process.
    """
    key = scratch_key(spec)
    if key not in _SCRATCH_CONFIGS:
        _SCRATCH_CONFIGS[key] = _config(spec, _tokenizer(spec))
    return _SCRATCH_CONFIGS[key]


def _training_data(spec: ScratchSpec) -> list[TaskData]:

    tasks = [spec.task, *spec.tasks]
    parts = []
    for task in tasks:
        if task in KV_TASKS:
            n = max(1000, spec.steps * spec.batch_size // len(tasks))
            parts.append(TaskData(task=task, n=min(n, 200_000), seed=spec.seed, kv=spec.kv))
        else:  # a from-scratch parent needs only enough text for its steps
            budget = spec.max_chars or spec.steps * spec.batch_size * spec.seq_len * 4
            parts.append(TaskData(task=task, max_chars=budget, seed=spec.seed))
    return parts


def materialize(spec: ScratchSpec) -> Path:
    """Train the from-scratch model described by ``spec`` unless it is cached; return its folder."""
    folder = scratch_folder(spec)
    if _is_cached(spec):
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    log.info(
        f"fusekit: training from-scratch model on '{spec.task}' "
        f"({spec.arch}, d={spec.hidden_size}, {spec.layers} layers, {spec.steps} steps) "
        f"-> {folder}"
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder, overwrite=True) as tmp:
        tokenizer = _tokenizer(spec)
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(_config(spec, tokenizer))
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        train = TrainSpec(
            steps=spec.steps, lr=spec.lr, batch_size=spec.batch_size, seq_len=spec.seq_len,
            seed=spec.seed, warmup_steps=max(1, spec.steps // 20),
            weight_decay=0.01 if spec.weight_decay is None else spec.weight_decay,
            adam_beta2=0.999 if spec.adam_beta2 is None else spec.adam_beta2,
            log_steps=max(1, spec.steps // 20),
        )  # fmt: skip
        summary = train_causal_lm(
            tmp, _training_data(spec), train, tmp, checkpoint_dir=tmp / ".checkpoints",
            label=f"{spec.task} (from scratch)",
        )  # fmt: skip
        _remove_tree(tmp / ".checkpoints")
        write_provenance(
            tmp,
            strategy="from_scratch",
            recipe={"from_scratch": spec.model_dump(mode="json")},
            plan={},
            inputs={},
            summary=summary,
        )
    return folder


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

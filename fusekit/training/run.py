"""``train_causal_lm``: the one training entry point that surgery strategies and from-scratch
parents use.  It loads a model folder, trains it with ``FusekitTrainer`` and saves the
result as a standard Hugging Face folder.

With an accelerate config (``fusekit run --accelerate-config FILE``) the same call
relaunches only the training under ``accelerate launch``: building, provenance and the
atomic rename stay in the single parent process, so several ranks never race on the
output folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fusekit.errors import FusekitError

ACCELERATE_ENV = "FUSEKIT_ACCELERATE_CONFIG"
WORKER_ENV = "FUSEKIT_TRAINING_WORKER"


def _load(model_dir: Path) -> tuple[Any, Any]:
    import torch

    from fusekit.io.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(model_dir)
    return model, tokenizer


def _clear_weights(folder: Path) -> None:
    """Remove old weight files before saving new ones, so no stale shard survives."""
    for p in folder.iterdir():
        if p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json":
            p.unlink()


def train_causal_lm(
    model_dir: str | Path,
    data: Any,
    spec: Any,
    out_dir: str | Path,
    *,
    trainable: Any = None,
    checkpoint_dir: str | Path | None = None,
    log_path: str | Path | None = None,
    lora: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the model in ``model_dir`` on ``data`` and save it to ``out_dir``.

    ``trainable`` is ``None`` (everything), a name predicate, or a list of exact
    parameter names / ``re:`` patterns.  ``lora`` (``peft.LoraConfig`` fields) trains
    adapters instead and merges them before saving, so the output is a plain model.
    ``spec.steps == 0`` trains nothing.
    Returns a JSON-able summary (steps, losses, trainable-parameter report, speed).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if spec.steps == 0:
        return {"steps": 0, "trained": False}
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / ".checkpoints"
    if os.environ.get(ACCELERATE_ENV) and not os.environ.get(WORKER_ENV):
        if lora is not None:
            raise FusekitError("LoRA fine-tuning does not run under --accelerate-config yet")
        return _relaunch(model_dir, data, spec, out_dir, trainable, checkpoint_dir, log_path)

    from fusekit.training.args import to_training_arguments
    from fusekit.training.data import CausalLMDataset, PadCollator, load_records, pad_id
    from fusekit.training.trainer import FusekitTrainer, LossLog, training_summary

    model, tokenizer = _load(model_dir)
    original_dtype = _config_dtype(model_dir)
    dataset = CausalLMDataset(load_records(data), tokenizer, spec.seq_len)
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
        trainable = None  # peft has already frozen everything but the adapters
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    log = LossLog(Path(log_path) if log_path else None)
    trainer = FusekitTrainer(
        model=model,
        args=to_training_arguments(spec, checkpoint_dir),
        train_dataset=dataset,
        data_collator=PadCollator(pad_id(tokenizer)),
        callbacks=[log],
        trainable=trainable,
    )
    resume = spec.resume and any(checkpoint_dir.glob("checkpoint-*"))
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - start
    if trainer.is_world_process_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        if out_dir == model_dir:
            _clear_weights(out_dir)
        if lora is not None:
            model = model.merge_and_unload()
        if original_dtype is not None:
            model.to(original_dtype)
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    return {**training_summary(trainer, result, log, seconds), "resumed": bool(resume)}


def _config_dtype(model_dir: Path) -> Any:
    """The dtype the checkpoint was stored in, to save the trained model the same way."""
    import torch

    cfg = json.loads((model_dir / "config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) and dtype != torch.float32 else None


def _trainable_names(model_dir: Path, trainable: Any) -> list[str] | None:
    """Turn a predicate into explicit names so it can cross a process boundary."""
    if trainable is None or not callable(trainable):
        return None if trainable is None else list(trainable)
    from fusekit.io.lazy import LazyCheckpoint

    names = LazyCheckpoint(model_dir).keys()
    return [name for name in names if trainable(name)]


def _relaunch(
    model_dir: Path,
    data: Any,
    spec: Any,
    out_dir: Path,
    trainable: Any,
    checkpoint_dir: Path,
    log_path: Any,
) -> dict[str, Any]:
    from pydantic import TypeAdapter

    from fusekit.recipe.common import DataRef, FileData

    if isinstance(data, (str, Path)):
        data = FileData(path=str(data))
    config = os.environ[ACCELERATE_ENV]
    if not Path(config).is_file():
        raise FusekitError(f"accelerate config '{config}' does not exist")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    job = checkpoint_dir / "job.json"
    job.write_text(
        json.dumps(
            {
                "model_dir": str(model_dir),
                "data": TypeAdapter(DataRef).dump_python(data, mode="json"),
                "spec": spec.model_dump(mode="json"),
                "out_dir": str(out_dir),
                "trainable": _trainable_names(model_dir, trainable),
                "checkpoint_dir": str(checkpoint_dir),
                "log_path": str(log_path) if log_path else None,
            }
        )
    )
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", config,
        "-m", "fusekit.training.worker", str(job),
    ]  # fmt: skip
    env = {**os.environ, WORKER_ENV: "1"}
    proc = subprocess.run(cmd, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"distributed training failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads((checkpoint_dir / "job.result.json").read_text())

"""Saving a trained model into an output folder as a standard Hugging Face folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def config_dtype(model_dir: str | Path) -> Any:
    """The non-fp32 dtype a checkpoint is stored in (None for fp32), to save it back that way."""
    import torch

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) and dtype != torch.float32 else None


def clear_weights(folder: Path) -> None:
    """Remove old weight files before saving new ones, so no stale shard survives."""
    for p in folder.iterdir():
        if p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json":
            p.unlink()


def save_trained(model: Any, tokenizer: Any, out_dir: str | Path, *, dtype: Any = None) -> None:
    """``save_pretrained`` (safetensors) into ``out_dir``, replacing any weights already there.

    LoRA adapters are merged first, so the output is a plain model; ``dtype``
    casts back to the dtype the input was stored in (training runs in fp32).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_weights(out)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)

"""Pickled checkpoints (``.bin``) as safetensors folders, converted once into the cache.

Only with ``allow_pickle: true``: unpickling can run code, so fusekit reads
``.bin`` files once — with ``torch.load(weights_only=True)``, which refuses
anything but tensors — and every strategy then works on the safetensors copy.
Surgery reads tensors lazily from safetensors headers, and the same copy serves
the training loaders, so the opt-in has one meaning everywhere.  The copy is
keyed by the folder's content hash: a changed checkpoint is converted again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fusekit import log
from fusekit.errors import ModelIOError
from fusekit.io.cache import cache_root
from fusekit.io.folders import PICKLED_SUFFIXES
from fusekit.io.hashing import folder_hash
from fusekit.io.output import atomic_output

_INDEX = "pytorch_model.bin.index.json"


def has_safetensors(folder: Path) -> bool:
    return any(p.name.endswith(".safetensors") for p in folder.iterdir() if p.is_file())


def _pickled_shards(folder: Path) -> list[Path]:
    index = folder / _INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(PICKLED_SUFFIXES))


def safetensors_folder(folder: str | Path) -> Path:
    """``folder`` itself if it has safetensors weights, else its cached safetensors copy."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    if has_safetensors(folder):
        return folder
    key = folder_hash(folder).split(":")[1][:16]
    target = cache_root() / "converted" / f"{folder.name}-{key}"
    if (target / "model.safetensors").is_file():
        return target
    log.info(f"fusekit: converting the pickled weights of {folder} to safetensors -> {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, torch.Tensor] = {}
    for shard in _pickled_shards(folder):
        try:
            loaded = torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for a bad or unsafe pickle
            raise ModelIOError(
                f"{shard} cannot be read as a weights-only checkpoint: {exc}"
            ) from None
        state.update(loaded)
    seen: set[int] = set()
    for name, tensor in state.items():  # tied weights share storage; safetensors refuses that
        ptr = tensor.untyped_storage().data_ptr()
        state[name] = tensor.clone().contiguous() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    with atomic_output(target, overwrite=True) as tmp:
        for path in folder.iterdir():
            if path.is_file() and not path.name.endswith(PICKLED_SUFFIXES) and path.name != _INDEX:
                shutil.copy2(path, tmp / path.name)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return target

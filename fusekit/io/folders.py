"""Cheap checks on model folders that read file names only (no torch, no transformers).

Recipe validation runs these so that ``fusekit validate`` can say "missing
folder" or "pickled weights only" in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def model_folder_problem(path: Path, *, allow_pickle: bool = False) -> str | None:
    """Why ``path`` is not a loadable model folder, or ``None`` if it looks fine."""
    if not path.exists():
        return f"model folder '{path}' does not exist"
    if not path.is_dir():
        if path.suffix.lower() == ".gguf":
            return None  # converted into a folder by fusekit.io.gguf
        return f"model path '{path}' is a file; give the folder that holds config.json"
    if not (path / "config.json").is_file():
        return f"model folder '{path}' has no config.json; is it a Hugging Face model folder?"
    names = [p.name for p in path.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") or n in SAFE_WEIGHTS for n in names):
        return None
    pickled = sorted(n for n in names if n.endswith(PICKLED_SUFFIXES))
    if pickled:
        if allow_pickle:
            return None
        return (
            f"model folder '{path}' holds only pickled weights ({pickled[0]}); "
            "convert it to safetensors or set allow_pickle: true"
        )
    return f"model folder '{path}' has no weights (*.safetensors)"

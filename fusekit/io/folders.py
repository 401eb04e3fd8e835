"""Cheap checks on model folders, before anything loads (no torch; transformers only
for the table of causal-LM classes).

Recipe validation runs ``model_folder_problem`` so that ``fusekit validate`` can say
"missing folder" or "pickled weights only" in a fraction of a second; loading and
the validation pass run ``check_model_folder`` and the ``refuse_*`` checks, each a
one-line ``ModelIOError`` before transformers could print a page of traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from fusekit.errors import ModelIOError

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


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


def safetensors_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file())


def _pickled_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_PICKLE_SUFFIXES))


def check_model_folder(path: str | Path, *, allow_pickle: bool = False) -> Path:
    """Return ``path`` as a Path if it is a complete local HF model folder, else raise.

    Checks, in order: the folder exists; it has ``config.json``; it has weights,
    safetensors unless ``allow_pickle``; a shard index names only shards that exist.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelIOError(f"model folder {folder} does not exist (or is not a folder)")
    if not (folder / "config.json").is_file():
        raise ModelIOError(
            f"{folder} has no config.json; point to a Hugging Face model folder "
            "(the one save_pretrained writes)"
        )
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as exc:
            raise ModelIOError(f"{index} is not a valid safetensors index ({exc})") from None
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise ModelIOError(f"{index} names shard {missing[0]} which is missing from {folder}")
        return folder
    if safetensors_files(folder):
        return folder
    pickled = _pickled_files(folder)
    if pickled:
        if allow_pickle:
            return folder
        raise ModelIOError(
            f"{folder} holds only pickled weights ({pickled[0].name}); convert it to "
            "safetensors or set allow_pickle: true"
        )
    raise ModelIOError(f"{folder} holds no weights (no *.safetensors files)")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def refuse_non_causal(folder: Path) -> None:
    """A checkpoint saved for another task (``BertForMaskedLM``) would load with a random head."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures")
    except (ValueError, OSError):
        return
    if not architectures:
        return
    causal: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal.update(value if isinstance(value, (list, tuple)) else [value])
    if not any(name in causal for name in architectures):
        raise ModelIOError(
            f"{folder} holds a {architectures[0]}, not a causal language model; fusekit fuses "
            "decoder LMs (…ForCausalLM)"
        )


def refuse_remote_code(folder: Path) -> None:
    """A folder whose config maps auto classes to its own code runs that code on load."""
    try:
        auto_map = json.loads((folder / "config.json").read_text()).get("auto_map")
    except (ValueError, OSError):
        return  # transformers reports a broken config itself
    if auto_map:
        raise ModelIOError(
            f"{folder} ships its own model code (auto_map in config.json); set "
            "trust_remote_code: true (CLI: --trust-remote-code) to run it, if you trust it"
        )

"""Loading models and tokenizers from local folders, safely.

fusekit is offline by design: everything loads with ``local_files_only=True`` and
pickled weights (``.bin``/``.pt``) are refused unless the recipe opts in, because
unpickling runs arbitrary code.  Problems are reported as one-line
``ModelIOError``s before transformers gets a chance to print a page of traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError, listing

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
)


def _safetensors_files(folder: Path) -> list[Path]:
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
    if _safetensors_files(folder):
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


def load_causal_lm(
    path: str | Path,
    *,
    dtype: Any = None,
    attn_implementation: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Any:
    """``AutoModelForCausalLM`` from a checked local folder, in eval mode.

    ``dtype`` may be a torch dtype, a name (``"bfloat16"``) or ``"auto"``;
    ``attn_implementation`` a name transformers knows (``"sdpa"``, ``"eager"``,
    ``"flash_attention_2"``); None keeps transformers' default for either.  A
    recipe's ``load:`` settings, resolved per model, arrive here.
    With ``allow_pickle`` and no safetensors present, transformers is left to pick
    the pickled files.
    Every load makes the validation pass first (``fusekit.io.validate.check_model``),
    whichever command asked: a truncated shard, a corrupt header or a tokenizer past
    the embedding is one line naming the file here too, not a safetensors or
    ``IndexError`` traceback half-way through an evaluation.
    """
    from transformers import AutoModelForCausalLM

    from fusekit.io.validate import check_model

    folder = check_model_folder(path, allow_pickle=allow_pickle)
    check_model(folder, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    has_safetensors = bool(_safetensors_files(folder))
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "use_safetensors": True if (has_safetensors or not allow_pickle) else None,
        "trust_remote_code": trust_remote_code,
    }
    if dtype is not None:
        kwargs["dtype"] = _torch_dtype(dtype)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(folder), output_loading_info=True, **kwargs
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelIOError(f"cannot load a causal LM from {folder}: {first_line(exc)}") from exc
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        # transformers initialises missing tensors randomly and carries on: refuse instead
        raise ModelIOError(
            f"{folder} lacks tensors its architecture needs ({listing(missing)}); the checkpoint is "
            "incomplete — copy it again or point to the complete folder"
        )
    model.eval()
    return model


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


def _torch_dtype(dtype: Any) -> Any:
    if not isinstance(dtype, str) or dtype == "auto":
        return dtype
    import torch

    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ModelIOError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer`` from a local folder; a clear error if the folder has none."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelIOError(f"tokenizer folder {folder} does not exist")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelIOError(
            f"{folder} has no tokenizer files (tokenizer.json or tokenizer_config.json); "
            "copy the base model's tokenizer into it"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelIOError(f"cannot load the tokenizer in {folder}: {first_line(exc)}") from exc

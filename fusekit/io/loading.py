"""Loading models and tokenizers from local folders, safely.

fusekit is offline by design: everything loads with ``local_files_only=True`` and
pickled weights (``.bin``/``.pt``) are refused unless the recipe opts in, because
unpickling runs arbitrary code.  Problems are reported as one-line
``ModelIOError``s before transformers gets a chance to print a page of traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError, listing
from fusekit.io.folders import check_model_folder, first_line, safetensors_files
from fusekit.io.tokenizer import load_tokenizer
from fusekit.io.validate import check_model


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

    folder = check_model_folder(path, allow_pickle=allow_pickle)
    check_model(folder, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    has_safetensors = bool(safetensors_files(folder))
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "use_safetensors": True if (has_safetensors or not allow_pickle) else None,
        "trust_remote_code": trust_remote_code,
    }
    if dtype is not None:
        kwargs["dtype"] = torch_dtype(dtype)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        # transformers annotates only the model, not the (model, info) pair that
        # output_loading_info=True returns.
        loaded: tuple[Any, dict[str, Any]] = AutoModelForCausalLM.from_pretrained(  # type: ignore[assignment]
            str(folder), output_loading_info=True, **kwargs
        )
        model, info = loaded
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


def torch_dtype(dtype: Any) -> Any:
    if not isinstance(dtype, str) or dtype == "auto":
        return dtype
    import torch

    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ModelIOError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


__all__ = ["load_causal_lm", "load_tokenizer"]

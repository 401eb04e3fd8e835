"""A complete check of one model folder, from its files alone, before any work.

Loading or splicing a broken folder fails late and badly: transformers fills a
missing tensor with random numbers and carries on, a surgery copies what is there
and writes a model with fewer tensors than its plan, a truncated shard crashes
half-way through a write, a tokenizer larger than the embedding only fails at the
first out-of-range id.  ``check_model`` reads the config, every safetensors
header and the tokenizer's size, and builds the architecture on the meta device
(no memory, no weights) to know which tensors, of which shapes, the folder must
hold.  It takes about a second even for a 7B model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError, listing
from fusekit.io.folders import (
    check_model_folder,
    first_line,
    refuse_non_causal,
    refuse_remote_code,
)
from fusekit.io.lazy import LazyCheckpoint
from fusekit.io.tokenizer import load_tokenizer


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` parsed, or one line saying where it is broken."""
    file = folder / "config.json"
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelIOError(
            f"{file} is not UTF-8 text; restore it from the original model"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelIOError(
            f"{file} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "restore it from the original model"
        ) from None
    if not isinstance(doc, dict):
        raise ModelIOError(f"{file} does not hold a JSON object")
    return doc


def _architecture(folder: Path, trust_remote_code: bool) -> Any:
    """The model this folder's config describes, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelIOError(
            f"{folder / 'config.json'} does not describe a causal LM transformers knows: "
            f"{first_line(exc)}"
        ) from None


def _required(model: Any) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Tensors the checkpoint must hold: tied names (``lm_head`` = embeddings) are one
    group, any of whose names may be on disk."""
    groups: dict[int, list[tuple[str, tuple[int, ...]]]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append((name, tuple(tensor.shape)))
    return {names[0][0]: names for names in groups.values()}


def _converted_on_load(model: Any) -> bool:
    """Whether transformers rewrites this architecture's checkpoint tensors as it loads.

    Mixture-of-experts families (Mixtral, Qwen2/3-MoE) store one tensor per expert
    and load them merged into one per layer (``transformers.conversion_mapping``), so
    the names and shapes on disk are not the module's; for them the load itself
    reports what is missing (``load_causal_lm`` refuses its ``missing_keys``).
    """
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:  # transformers 4 loads every checkpoint as it is stored
        return False
    return get_checkpoint_conversion_mapping(model.config.model_type) is not None


def _check_tensors(folder: Path, model: Any) -> None:
    ckpt = LazyCheckpoint(folder)  # checks every header against its file
    if _converted_on_load(model):
        return
    missing, wrong = [], []
    for first, names in _required(model).items():
        present = [(n, shape) for n, shape in names if n in ckpt]
        if not present:
            missing.append(first)
        for name, shape in present:
            if ckpt.shape(name) != shape:
                wrong.append(f"{name} {list(ckpt.shape(name))} ≠ {list(shape)}")
    if missing:
        raise ModelIOError(
            f"{folder} lacks tensors its architecture needs ({listing(missing)}); the checkpoint "
            "is incomplete — copy it again or point to the complete folder"
        )
    if wrong:
        raise ModelIOError(
            f"{folder}: tensor shapes do not match config.json ({listing(wrong, 2)}); the config "
            "belongs to another model"
        )


def tokenizer_size(folder: Path) -> int | None:
    """How many ids the folder's tokenizer can produce (None when it has no tokenizer)."""
    file = folder / "tokenizer.json"
    if file.is_file():
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_file(str(file)).get_vocab_size(with_added_tokens=True)
        except Exception as exc:  # the Rust library raises a bare Exception
            raise ModelIOError(f"{file} is not a readable tokenizer ({first_line(exc)})") from None
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.model").is_file():
        return len(load_tokenizer(folder))
    return None


#: Folders that passed, by their files' names, sizes and change times: a run checks its
#: inputs up front and then loads them (a second check would rebuild the architecture).
_PASSED: set[tuple[Any, ...]] = set()


def _state(folder: Path, *flags: bool) -> tuple[Any, ...]:
    """What a pass depends on: the folder's files as they are now, and the opt-ins."""
    files = []
    for p in sorted(folder.iterdir()):
        st = p.lstat()  # a dangling link has a state too; the pass itself judges its target
        files.append((p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return (str(folder.resolve()), *flags, tuple(files))


def check_model(
    folder: str | Path,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    need_tokenizer: bool = False,
) -> None:
    """Refuse, in one line, a folder fusekit could not use completely and exactly.

    Checked: config.json parses; no remote code unless trusted; a causal LM; every
    tensor the architecture needs present with its shape, in safetensors files
    whose headers agree with their sizes; a tokenizer (when ``need_tokenizer``)
    with no id beyond the embedding.  Pickled checkpoints get the config and
    tokenizer checks here and the tensor check when they are converted.
    """

    folder = check_model_folder(folder, allow_pickle=allow_pickle)
    key = _state(folder, allow_pickle, trust_remote_code, need_tokenizer)
    if key in _PASSED:
        return
    _check(folder, trust_remote_code, need_tokenizer)
    _PASSED.add(key)


def _check(folder: Path, trust_remote_code: bool, need_tokenizer: bool) -> None:
    read_config(folder)
    if not trust_remote_code:
        refuse_remote_code(folder)
        refuse_non_causal(folder)
    model = _architecture(folder, trust_remote_code)
    if any(folder.glob("*.safetensors")):
        _check_tensors(folder, model)
    size = tokenizer_size(folder)
    if size is None:
        if need_tokenizer:
            raise ModelIOError(
                f"{folder} has no tokenizer (tokenizer.json or tokenizer_config.json); copy the "
                "base model's tokenizer files into it"
            )
        return
    rows = model.get_input_embeddings().weight.shape[0]
    if size > rows:
        raise ModelIOError(
            f"{folder}: the tokenizer has {size} tokens but the embedding only {rows} rows; "
            "ids past the embedding would crash training — resize the embedding "
            "(model.resize_token_embeddings) or use the model's own tokenizer"
        )

"""Loading a tokenizer from a local folder, offline, with a one-line error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError
from fusekit.io.folders import first_line

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
)


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

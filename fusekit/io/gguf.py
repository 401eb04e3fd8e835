"""GGUF files as model sources: dequantised once into an ordinary Hugging Face folder.

Small pretrained models are often shipped as a single ``.gguf`` file (llama.cpp's
format).  transformers can read one (``from_pretrained(dir, gguf_file=NAME)``,
with the ``gguf`` package) and dequantises every tensor, but the model it returns
refuses ``save_pretrained`` ("quantized with gguf and is not serializable") although
no weight is quantised any more.  So fusekit rebuilds a plain model from the config
(without ``quantization_config``), loads the dequantised state into it, re-ties
the embeddings and saves that: a safetensors folder with tokenizer and generation
config, which every strategy then reads like any other folder.

Anywhere a recipe or the CLI takes a model folder it also takes a ``.gguf`` file;
the conversion is cached under ``$FUSEKIT_CACHE/gguf/``, keyed by the file's
content hash, and the run's ``fusekit.json`` records the GGUF file and its hash.
``fusekit convert FILE.gguf -o DIR`` does the same into a folder of one's choosing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.errors import ModelIOError
from fusekit.io.hashing import file_hash

MAGIC = b"GGUF"
RECORD = "fusekit-gguf.json"


def is_gguf(path: str | Path) -> bool:
    return str(path).lower().endswith(".gguf")


def check_gguf(path: str | Path) -> Path:
    """The file, if it exists and starts like a GGUF file; else one line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelIOError(f"GGUF file {file} does not exist")
    with open(file, "rb") as fh:
        if fh.read(4) != MAGIC:
            raise ModelIOError(f"{file} is not a GGUF file (it does not start with 'GGUF')")
    return file


def _load(file: Path) -> tuple[Any, Any]:
    """transformers' dequantised model and tokenizer, with its refusals as one line."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ModelIOError("reading GGUF files needs the gguf package (pip install gguf)") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusekit.io.loading import first_line

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name)
    except (ValueError, KeyError, NotImplementedError, RuntimeError, OSError) as exc:
        raise ModelIOError(
            f"{file}: transformers cannot dequantise this GGUF file ({first_line(exc)}); "
            "convert it with llama.cpp's tools or use the original checkpoint"
        ) from None
    return model, tokenizer


def _plain(model: Any) -> Any:
    """The same weights in a model transformers will save (no GGUF quantisation config)."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = (
        {k for k in missing if k.endswith("lm_head.weight")}
        if config.tie_word_embeddings
        else set()
    )
    if set(missing) - tied or unexpected:
        raise ModelIOError(
            f"the dequantised model does not match its architecture (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})"
        )
    plain.tie_weights()
    plain.eval()
    return plain


def convert(
    path: str | Path,
    out: str | Path,
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    sha256: str | None = None,
) -> Path:
    """Dequantise ``path`` into the model folder ``out`` (atomic: all or nothing).

    ``sha256``: the file's hash when the caller has it already (a GGUF file is
    hundreds of MB; reading it twice is waste)."""
    import transformers

    from fusekit.io.loading import _torch_dtype
    from fusekit.io.output import atomic_output

    file = check_gguf(path)
    sha = sha256 or file_hash(file)
    model, tokenizer = _load(file)
    plain = _plain(model)
    if dtype is not None:
        plain = plain.to(_torch_dtype(dtype))
    with atomic_output(out, overwrite=overwrite, inputs=[file]) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {
            "gguf_file": str(file.resolve()),
            "sha256": sha,
            "dequantised": True,
            "dtype": str(plain.dtype).removeprefix("torch."),
            "architecture": type(plain).__name__,
            "transformers": transformers.__version__,
        }
        (Path(tmp) / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def cached_folder(path: str | Path) -> Path:
    """The converted folder of a GGUF file, converting it the first time (keyed by content)."""
    from fusekit.sources import cache_root

    file = check_gguf(path)
    sha = file_hash(file)
    folder = cache_root() / "gguf" / f"{file.stem}-{sha[:16]}"
    if not (folder / RECORD).is_file():
        log.info(f"fusekit: converting {file.name} (GGUF, dequantised) into {folder}")
        convert(file, folder, overwrite=folder.exists(), sha256=sha)
    return folder


def conversion_record(folder: str | Path) -> dict[str, Any] | None:
    """What ``convert`` recorded about the GGUF file a folder came from (None: not converted)."""
    file = Path(folder) / RECORD
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def with_converted_models(recipe: Any) -> Any:
    """The recipe with every ``.gguf`` model reference pointing at its converted folder."""
    from fusekit.checks import local_models
    from fusekit.recipe import parse_recipe, recipe_to_dict

    refs = [r for r in local_models(recipe) if is_gguf(r.path)]
    if not refs:
        return recipe
    folders = {r.path: str(cached_folder(r.path)) for r in refs}

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            if (
                isinstance(node.get("path"), str)
                and node["path"] in folders
                and "allow_pickle" in node
            ):
                return {**node, "path": folders[node["path"]]}
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    return parse_recipe(swap(recipe_to_dict(recipe)))

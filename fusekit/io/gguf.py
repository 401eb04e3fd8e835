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

Before any of that, the header, metadata and tensor table are walked and checked
against the file's size (``check_gguf``): transformers would otherwise meet a
truncated or corrupt file minutes into dequantising, with a message that blames the
architecture.  The folder is written like every output (``atomic_output``), so a
full disk leaves nothing in the cache.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.errors import ModelIOError
from fusekit.io.cache import cache_root
from fusekit.io.folders import first_line
from fusekit.io.hashing import file_hash
from fusekit.io.loading import torch_dtype
from fusekit.io.output import atomic_output, check_output

MAGIC = b"GGUF"
RECORD = "fusekit-gguf.json"
DTYPES = ("float32", "bfloat16", "float16")  # what dequantised weights can be saved as
_AGAIN = "download or copy it again"

# The layout fixed by the GGUF format: a 24-byte header (magic, version u32, tensor
# count u64, metadata count u64); metadata value types 0-12 (scalars by struct code,
# 8 a string, 9 an array); the smallest possible metadata entry (empty key, type, a
# one-byte value) and tensor-table entry (empty name, dimension count, type, offset);
# ggml's four dimensions at most.  A count the file cannot hold is found by the walk
# (every step consumes bytes, so it ends within the file); one no file could hold is
# refused outright as corrupt, since no truncation explains it.
_HEADER = 24
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?",
            10: "Q", 11: "q", 12: "d"}  # fmt: skip
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_LEAST_ENTRY, _LEAST_TENSOR = 13, 24
_MAX_DIMS = 4
_ANY_FILE = 2**63  # no file is larger (a signed 64-bit offset)


def is_gguf(path: str | Path) -> bool:
    return str(path).lower().endswith(".gguf")


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ModelIOError("reading GGUF files needs the gguf package (pip install gguf)") from None
    return gguf


def check_gguf(path: str | Path) -> Path:
    """The file, if its header and tensor table fit inside it; else one line saying why.

    Checked before the file is hashed or dequantised: transformers' reader (``gguf``)
    trusts every count and length, so a truncated file or a corrupt count fails deep
    inside it with an unrelated message, loops on an array that claims 2**62 items, or
    gets as far as dequantising.  Every length here is compared with the bytes left
    before it is used, so nothing is allocated or looped over that the file's size
    could not hold.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelIOError(f"GGUF file {file} does not exist")
    with open(file, "rb") as fh:
        if fh.read(4) != MAGIC:
            raise ModelIOError(f"{file} is not a GGUF file (it does not start with 'GGUF')")
        size = os.fstat(fh.fileno()).st_size
        if size < _HEADER:
            raise ModelIOError(
                f"{file} is truncated: {size} bytes, less than GGUF's {_HEADER}-byte header; {_AGAIN}"
            )
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            _check_layout(file, data, _gguf())
    return file


class _Header:
    """A cursor over a GGUF header that checks every length against the bytes left."""

    def __init__(self, file: Path, data: mmap.mmap, order: str) -> None:
        self.file, self.data, self.order = file, data, order
        self.size, self.pos = len(data), 0
        self.claims = ""  # what the header claims, once read, for the truncation line

    def need(self, n: int, what: str) -> None:
        """Refuse unless ``n`` more bytes are there: more than the whole file is a corrupt
        length (no truncation explains it), otherwise the file stops short."""
        if self.pos + n <= self.size:
            return
        if n > self.size:
            raise ModelIOError(
                f"{self.file} is corrupt: {what} claims {n:,} bytes, more than the whole file "
                f"({self.size:,} bytes); {_AGAIN}"
            )
        raise ModelIOError(
            f"{self.file} is truncated: its {self.size:,} bytes end inside {what}{self.claims}; "
            f"{_AGAIN}"
        )

    def skip(self, n: int, what: str) -> int:
        """Step over ``n`` bytes; where they start."""
        self.need(n, what)
        self.pos += n
        return self.pos - n

    def number(self, code: str, what: str) -> Any:
        start = self.skip(struct.calcsize(code), what)
        return struct.unpack_from(self.order + code, self.data, start)[0]

    def text(self, what: str) -> str:
        start = self.skip(self.number("Q", what), what)
        try:
            return self.data[start : self.pos].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelIOError(
                f"{self.file} is corrupt: {what} has a name that is not UTF-8; {_AGAIN}"
            ) from None

    def value(self, kind: int, what: str) -> Any:
        """Step over one metadata value of type ``kind``; a scalar's value, else None."""
        if kind in _SCALARS:
            return self.number(_SCALARS[kind], what)
        if kind == _STRING:
            self.skip(self.number("Q", what), what)
            return None
        if kind != _ARRAY:
            raise ModelIOError(f"{self.file} is corrupt: {what} has value type {kind}; {_AGAIN}")
        item, count = self.number("I", what), self.number("Q", what)
        if item in _SCALARS:
            self.skip(count * struct.calcsize(_SCALARS[item]), what)
        elif item == _STRING:
            self.strings(count, what)
        else:
            self.need(count * 12, what)  # each nested array's item type and count
            for _ in range(count):
                self.value(item, what)
        return None

    def strings(self, count: int, what: str) -> None:
        """Step over ``count`` strings in a tight loop (a vocabulary has up to 262,144)."""
        self.need(count * 8, what)  # each string's length
        length = struct.Struct(self.order + "Q").unpack_from
        data, size, pos = self.data, self.size, self.pos
        for _ in range(count):
            if pos + 8 > size:
                self.need(pos + 8 - self.pos, what)  # the file ends before this string
            pos += 8 + length(data, pos)[0]
        self.skip(pos - self.pos, what)


def _check_layout(file: Path, data: mmap.mmap, gguf: Any) -> None:
    """Header counts, metadata, tensor table and every tensor's bytes against the file."""
    order = "<" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF else ">"  # big-endian writer
    head = _Header(file, data, order)
    head.skip(4, "the magic")
    version = head.number("I", "the header")
    supported = gguf.gguf_reader.READER_SUPPORTED_VERSIONS
    if version not in supported:
        raise ModelIOError(
            f"{file} is GGUF version {version}; the gguf package reads versions "
            f"{' and '.join(map(str, supported))}: re-save it with llama.cpp's tools or {_AGAIN}"
        )
    tensors, entries = head.number("Q", "the header"), head.number("Q", "the header")
    for count, least, what in ((tensors, _LEAST_TENSOR, "tensors"),
                               (entries, _LEAST_ENTRY, "metadata entries")):  # fmt: skip
        if count * least > _ANY_FILE:
            raise ModelIOError(
                f"{file} is corrupt: its header claims {count:,} {what}, more than any file "
                f"could hold (this one has {len(data):,} bytes); {_AGAIN}"
            )
    head.claims = f" (its header claims {tensors:,} tensors and {entries:,} metadata entries)"
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    for i in range(entries):
        where = f"metadata entry {i + 1} of {entries:,}"
        key = head.text(where)
        kind = head.number("I", where)
        value = head.value(kind, f"{where} ({key!r})")
        if key == "general.alignment":
            if kind != _UINT32 or value == 0 or value & (value - 1):
                raise ModelIOError(
                    f"{file} is corrupt: general.alignment {value!r} is not a power of two; {_AGAIN}"
                )
            alignment = value
    table = []
    for i in range(tensors):
        where = f"tensor {i + 1} of {tensors:,} in the tensor table"
        name = head.text(where)
        n_dims = head.number("I", where)
        if n_dims > _MAX_DIMS:
            raise ModelIOError(
                f"{file} is corrupt: tensor {name!r} claims {n_dims:,} dimensions (GGUF has at "
                f"most {_MAX_DIMS}); {_AGAIN}"
            )
        dims = [head.number("Q", where) for _ in range(n_dims)]
        table.append((name, dims, head.number("I", where), head.number("Q", where)))
    start = -(-head.pos // alignment) * alignment
    _check_tensors(file, len(data), start, alignment, table, gguf)


def _check_tensors(
    file: Path, size: int, start: int, alignment: int, table: list[tuple[str, list[int], int, int]],
    gguf: Any,
) -> None:  # fmt: skip
    """Every tensor's bytes end to end from ``start``, and inside the file.

    llama.cpp refuses a file whose tensors do not follow each other in table order
    (each offset the end of the one before, padded to the alignment), so a shape or
    offset that breaks the chain is corruption; a chain that runs past the end of the
    file is a truncation."""
    expected, end, before = 0, 0, ""
    for name, dims, code, offset in table:
        try:
            kind = gguf.GGMLQuantizationType(code)
            block, type_size = gguf.GGML_QUANT_SIZES[kind]
        except (ValueError, KeyError):
            raise ModelIOError(
                f"{file}: tensor {name!r} has type code {code}, which the installed gguf package "
                f"does not know; upgrade it (pip install -U gguf) or {_AGAIN}"
            ) from None
        shape = " x ".join(f"{d:,}" for d in dims)
        if dims and dims[0] % block:
            raise ModelIOError(
                f"{file} is corrupt: tensor {name!r} of shape {shape} is not whole {kind.name} "
                f"blocks of {block}; {_AGAIN}"
            )
        if offset != expected:
            ends = f"{before} before it ends at {expected:,}" if before else "the data begins at 0"
            raise ModelIOError(
                f"{file} is corrupt: its tensor table puts {name!r} at offset {offset:,}, but "
                f"{ends}; {_AGAIN}"
            )
        nbytes = math.prod(dims) // block * type_size
        before = f"{name!r} of shape {shape} ({nbytes:,} bytes)"
        end = start + offset + nbytes
        expected = -(-(offset + nbytes) // alignment) * alignment
    if end > size:
        raise ModelIOError(
            f"{file} is truncated: its tensor table claims {len(table):,} tensors whose data ends "
            f"at byte {end:,} (the last is {before}), but the file has {size:,} bytes; {_AGAIN}"
        )


def _load(file: Path) -> tuple[Any, Any]:
    """transformers' dequantised model and tokenizer, with its refusals as one line."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    path: str | Path, out: str | Path, *, dtype: str | None = None, overwrite: bool = False
) -> Path:
    """Dequantise ``path`` into the model folder ``out`` (atomic: all or nothing).

    The dtype, the output and the file's layout are checked first: a refusal should
    come in a second, not after a minute of dequantising."""

    if dtype is not None and dtype not in DTYPES:
        raise ModelIOError(
            f"dtype {dtype!r} cannot hold dequantised weights; choose {', '.join(DTYPES)}"
        )
    file = Path(path).expanduser()
    check_output(Path(out).expanduser().absolute(), overwrite=overwrite, inputs=[file])
    file = check_gguf(file)
    return _write(file, Path(out), dtype=dtype, overwrite=overwrite, sha256=file_hash(file))


def _write(file: Path, out: Path, *, dtype: str | None, overwrite: bool, sha256: str) -> Path:
    """Dequantise a checked file into ``out``; a failed write leaves no folder behind."""
    import transformers

    model, tokenizer = _load(file)
    plain = _plain(model)
    if dtype is not None:
        plain = plain.to(torch_dtype(dtype))
    with atomic_output(out, overwrite=overwrite, inputs=[file]) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {
            "gguf_file": str(file.resolve()),
            "sha256": sha256,
            "dequantised": True,
            "dtype": str(plain.dtype).removeprefix("torch."),
            "architecture": type(plain).__name__,
            "transformers": transformers.__version__,
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def cached_folder(path: str | Path) -> Path:
    """The converted folder of a GGUF file, converting it the first time (keyed by content)."""

    file = check_gguf(path)
    sha = file_hash(file)
    folder = cache_root() / "gguf" / f"{file.stem}-{sha[:16]}"
    if not (folder / RECORD).is_file():
        log.info(f"fusekit: converting {file.name} (GGUF, dequantised) into {folder}")
        _write(file, folder, dtype=None, overwrite=folder.exists(), sha256=sha)
    return folder


def conversion_record(folder: str | Path) -> dict[str, Any] | None:
    """What ``convert`` recorded about the GGUF file a folder came from (None: not converted)."""
    file = Path(folder) / RECORD
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

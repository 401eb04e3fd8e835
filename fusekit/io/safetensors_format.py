"""The safetensors file layout, read and written directly.

fusekit parses headers itself (8-byte little-endian length, then JSON) so that
planning reads only headers, and reads/writes tensor bytes with plain file I/O
rather than memory maps: a memory-mapped file counts every page touched towards
the process's resident set, which would make a streamed surgery of a 100 GB model
look (and, under memory limits, behave) like a full load.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# safetensors dtype code -> (torch dtype name, bytes per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
}
CODE_OF: dict[str, str] = {name: code for code, (name, _) in DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor's bytes live and what they are."""

    file: Path
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    start: int  # absolute byte offset in ``file``
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def torch_dtype_name(self) -> str:
        return DTYPES[self.dtype][0]


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Tensor infos and ``__metadata__`` of one safetensors file, reading only its header.

    The header is checked against the file itself — a length that fits, JSON, known
    dtype codes, byte ranges that match each shape and lie inside the file — so a
    truncated or corrupt file is a ``ValueError`` naming what is wrong, before any
    tensor is read (a bad offset would otherwise surface as garbage or a crash
    deep inside a surgery).
    """
    file_size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError("too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        if size > file_size - 8:
            raise ValueError(f"header length {size} exceeds the file's {file_size} bytes")
        try:
            header = json.loads(fh.read(size))
        except (ValueError, UnicodeDecodeError):
            raise ValueError("the header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    base = 8 + size
    metadata = header.pop("__metadata__", None) or {}
    infos = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = (
                entry["dtype"],
                tuple(entry["shape"]),
                entry["data_offsets"],
            )
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"tensor {name} has a malformed header entry") from None
        if dtype not in DTYPES:
            raise ValueError(f"tensor {name} has unknown dtype {dtype!r}")
        info = TensorInfo(file=path, dtype=dtype, shape=shape, start=base + begin, end=base + end)
        if not 0 <= begin <= end or info.nbytes != info.numel * DTYPES[dtype][1]:
            raise ValueError(f"tensor {name}'s byte range does not match its shape {list(shape)}")
        if info.end > file_size:
            raise ValueError(f"tensor {name} ends past the end of the file (truncated?)")
        infos[name] = info
    return infos, metadata


def encode_header(entries: dict[str, dict[str, Any]], metadata: dict[str, str]) -> bytes:
    """8-byte length + JSON header, padded with spaces to a multiple of 8 (as safetensors does)."""
    body: dict[str, Any] = {"__metadata__": metadata, **entries}
    raw = json.dumps(body, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw

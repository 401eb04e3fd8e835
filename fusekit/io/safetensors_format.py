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
    """Tensor infos and ``__metadata__`` of one safetensors file, reading only its header."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        header: dict[str, Any] = json.loads(fh.read(size))
    base = 8 + size
    metadata = header.pop("__metadata__", None) or {}
    infos = {
        name: TensorInfo(
            file=path,
            dtype=entry["dtype"],
            shape=tuple(entry["shape"]),
            start=base + entry["data_offsets"][0],
            end=base + entry["data_offsets"][1],
        )
        for name, entry in header.items()
    }
    return infos, metadata


def encode_header(entries: dict[str, dict[str, Any]], metadata: dict[str, str]) -> bytes:
    """8-byte length + JSON header, padded with spaces to a multiple of 8 (as safetensors does)."""
    body: dict[str, Any] = {"__metadata__": metadata, **entries}
    raw = json.dumps(body, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw

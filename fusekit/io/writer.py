"""Write a model's tensors as safetensors shards, in bounded memory.

Two ways to use ``ShardedWriter``:

* **declared** (what surgery uses): ``declare`` every output tensor's name, shape and
  dtype first (known from the inputs' headers), then ``add`` them.  The shard
  layout and every header are fixed up front, so each tensor's bytes go straight
  to their final offset and memory holds one tensor at a time.
* **buffered**: just ``add``; tensors are held until a shard is full (at most
  ``max_shard_bytes`` in memory), then written.

Either way the result is what ``save_pretrained`` writes: one ``model.safetensors``,
or ``model-0000k-of-0000n.safetensors`` plus ``model.safetensors.index.json``,
with metadata ``{"format": "pt"}`` so transformers accepts it.  Files are
fsynced; making the whole folder appear atomically is ``atomic_output``'s job.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusekit.io.safetensors_format import CODE_OF, DTYPES, encode_header, read_header
from fusekit.io.sizes import DEFAULT_SHARD_BYTES, parse_size


def dtype_code(dtype: Any) -> str:
    """safetensors code for a torch dtype, a dtype name (``"bfloat16"``) or a code."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in CODE_OF:
        raise ValueError(f"safetensors cannot store dtype {dtype}")
    return CODE_OF[name]


@dataclass
class _Entry:
    name: str
    code: str
    shape: tuple[int, ...]
    nbytes: int
    offset: int = 0  # from the start of the shard's data section


@dataclass
class _Shard:
    entries: list[_Entry] = field(default_factory=list)
    nbytes: int = 0
    header: bytes = b""
    fd: int | None = None
    pending: int = 0


def _layout(shard: _Shard, metadata: dict[str, str]) -> None:
    """Fix offsets (widest dtypes first, so every tensor is aligned) and the header."""
    offset = 0
    for entry in sorted(shard.entries, key=lambda e: -DTYPES[e.code][1]):
        entry.offset = offset
        offset += entry.nbytes
    header = {
        e.name: {"dtype": e.code, "shape": list(e.shape),
                 "data_offsets": [e.offset, e.offset + e.nbytes]}
        for e in shard.entries
    }  # fmt: skip
    shard.header = encode_header(header, metadata)


def _tensor_bytes(tensor: Any) -> Any:
    """A zero-copy byte view of a contiguous CPU tensor (works for bf16, unlike numpy)."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()


CHUNK = 8 << 20  # bytes per write when filling or copying without the kernel
_SCALAR_FORMATS = {"F64": "<d", "F32": "<f", "F16": "<e"}


def _encode_scalar(value: float, code: str) -> bytes:
    """One element of ``code`` holding ``value`` (bf16 = the high half of the float32)."""
    if code == "BF16":
        bits = struct.pack("<f", value)
        if struct.unpack("<f", b"\0\0" + bits[2:])[0] != value:
            raise ValueError(f"{value} is not exactly representable in bfloat16")
        return bits[2:]
    if code not in _SCALAR_FORMATS:
        raise ValueError(f"cannot fill a {code} tensor with a constant")
    return struct.pack(_SCALAR_FORMATS[code], value)


def _copy_range(src: int, dst: int, src_offset: int, dst_offset: int, nbytes: int) -> None:
    """Copy bytes between files in the kernel when possible, else in 8 MiB chunks."""
    kernel = hasattr(os, "copy_file_range")
    done = 0
    while done < nbytes:
        a, b, left = src_offset + done, dst_offset + done, nbytes - done
        if kernel:
            try:
                n = os.copy_file_range(src, dst, left, a, b)
            except OSError:  # unsupported here (other filesystem, old kernel): fall back
                kernel = False
                continue
        else:
            data = os.pread(src, min(CHUNK, left), a)
            _pwrite_all(dst, data, b)
            n = len(data)
        if n == 0:
            raise OSError(f"source file ends {left} bytes early")
        done += n


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class ShardedWriter:
    """Streamed safetensors shard writer (see module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        max_shard_bytes: int | str = DEFAULT_SHARD_BYTES,
        *,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = parse_size(max_shard_bytes)
        self.metadata = {"format": "pt", **(metadata or {})}
        self._declared: dict[str, _Entry] = {}
        self._shards: list[_Shard] = []
        self._shard_of: dict[str, int] = {}
        self._written: set[str] = set()
        self._frozen = False  # declared layout fixed
        self._buffer: dict[str, Any] = {}
        self._buffer_bytes = 0
        self._closed = False
        self.files: list[str] = []

    # -- declared mode -------------------------------------------------------------
    def declare(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        """Announce an output tensor before any ``add``; fixes the layout for streaming."""
        if self._frozen or self._buffer or self._written:
            raise RuntimeError("declare every tensor before the first add()")
        if name in self._declared:
            raise ValueError(f"tensor {name!r} declared twice")
        code = dtype_code(dtype)
        numel = 1
        for d in shape:
            numel *= int(d)
        self._declared[name] = _Entry(name, code, tuple(int(d) for d in shape),
                                      numel * DTYPES[code][1])  # fmt: skip

    def _freeze(self) -> None:
        current = _Shard()
        for entry in self._declared.values():
            if current.entries and current.nbytes + entry.nbytes > self.max_shard_bytes:
                self._shards.append(current)
                current = _Shard()
            current.entries.append(entry)
            current.nbytes += entry.nbytes
        if current.entries:
            self._shards.append(current)
        self.files = self._names(len(self._shards))
        for k, shard in enumerate(self._shards):
            _layout(shard, self.metadata)
            shard.pending = len(shard.entries)
            for entry in shard.entries:
                self._shard_of[entry.name] = k
        self._frozen = True

    def _slot(self, name: str) -> tuple[int, int, _Entry]:
        """(fd, absolute offset, entry) where declared tensor ``name`` goes; opens its shard."""
        if self._closed:
            raise RuntimeError("writer is closed")
        if not self._frozen:
            self._freeze()
        entry = self._declared.get(name)
        if entry is None:
            raise KeyError(f"tensor {name!r} was not declared")
        if name in self._written:
            raise ValueError(f"tensor {name!r} added twice")
        shard = self._shards[self._shard_of[name]]
        if shard.fd is None:
            path = self.folder / self.files[self._shard_of[name]]
            shard.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            _pwrite_all(shard.fd, shard.header, 0)
        return shard.fd, len(shard.header) + entry.offset, entry

    def _done(self, name: str) -> None:
        self._written.add(name)
        shard = self._shards[self._shard_of[name]]
        shard.pending -= 1
        if shard.pending == 0 and shard.fd is not None:
            os.fsync(shard.fd)
            os.close(shard.fd)
            shard.fd = None

    def _write_declared(self, name: str, tensor: Any) -> None:
        entry = self._declared.get(name)
        shape, code = tuple(tensor.shape), dtype_code(tensor.dtype)
        if entry is not None and (shape != entry.shape or code != entry.code):
            raise ValueError(
                f"tensor {name!r} is {code}{list(shape)}, declared {entry.code}{list(entry.shape)}"
            )
        fd, offset, _ = self._slot(name)
        _pwrite_all(fd, _tensor_bytes(tensor), offset)
        self._done(name)

    def add_from_file(self, name: str, path: str | Path, start: int) -> None:
        """Copy a declared tensor's bytes straight from another file (declared mode only).

        Used when a tensor is copied unchanged: the kernel moves the bytes
        (``copy_file_range``), so they never enter this process's memory.
        """
        fd, offset, entry = self._slot(name)
        src = os.open(path, os.O_RDONLY)
        try:
            _copy_range(src, fd, start, offset, entry.nbytes)
        finally:
            os.close(src)
        self._done(name)

    def add_constant(self, name: str, value: float) -> None:
        """Fill a declared floating-point tensor with ``value`` (declared mode only)."""
        fd, offset, entry = self._slot(name)
        element = _encode_scalar(value, entry.code)
        chunk = memoryview(element * max(1, min(CHUNK, entry.nbytes) // len(element)))
        remaining = entry.nbytes
        while remaining:
            part = chunk[: min(len(chunk), remaining)]  # a view, not a copy
            _pwrite_all(fd, part, offset)
            offset += len(part)
            remaining -= len(part)
        self._done(name)

    # -- buffered mode ---------------------------------------------------------------
    def _flush_buffer(self) -> None:
        if not self._buffer:
            return
        shard = _Shard()
        for name, tensor in self._buffer.items():
            shard.entries.append(_Entry(name, dtype_code(tensor.dtype), tuple(tensor.shape),
                                        tensor.numel() * tensor.element_size()))  # fmt: skip
        _layout(shard, self.metadata)
        temp = self.folder / f".shard-{len(self.files):05d}.partial"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _pwrite_all(fd, shard.header, 0)
            for entry in shard.entries:
                data = _tensor_bytes(self._buffer[entry.name])
                _pwrite_all(fd, data, len(shard.header) + entry.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.files.append(temp.name)
        self._buffer.clear()
        self._buffer_bytes = 0

    # -- common --------------------------------------------------------------------
    def add(self, name: str, tensor: Any) -> None:
        """Write (declared mode) or buffer (buffered mode) one tensor."""
        if self._closed:
            raise RuntimeError("writer is closed")
        if self._declared:
            self._write_declared(name, tensor)
            return
        if name in self._buffer or name in self._written:
            raise ValueError(f"tensor {name!r} added twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + nbytes > self.max_shard_bytes:
            self._flush_buffer()
        self._buffer[name] = tensor
        self._buffer_bytes += nbytes
        self._written.add(name)

    @staticmethod
    def _names(n: int) -> list[str]:
        if n == 1:
            return ["model.safetensors"]
        return [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]

    def close(self) -> list[str]:
        """Finish every shard, write the index when sharded; returns the shard file names."""
        if self._closed:
            return self.files
        if self._declared:
            if not self._frozen:
                self._freeze()
            missing = [n for n in self._declared if n not in self._written]
            if missing:
                raise RuntimeError(
                    f"{len(missing)} declared tensors never added, e.g. {missing[0]}"
                )
            weight_map = {n: self.files[self._shard_of[n]] for n in self._declared}
            total = sum(e.nbytes for e in self._declared.values())
        else:
            self._flush_buffer()
            final = self._names(len(self.files))
            weight_map, total = {}, 0
            for temp, name in zip(self.files, final, strict=True):
                path = self.folder / temp
                infos, _ = read_header(path)
                weight_map.update({k: name for k in infos})
                total += sum(i.nbytes for i in infos.values())
                os.replace(path, self.folder / name)
            self.files = final
        if len(self.files) > 1:
            index = {
                "metadata": {"total_size": total},
                "weight_map": dict(sorted(weight_map.items())),
            }
            path = self.folder / "model.safetensors.index.json"
            with open(path, "w") as fh:
                json.dump(index, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
        self._closed = True
        return self.files

    def abort(self) -> None:
        """Close open file handles without finishing (the folder is then garbage)."""
        for shard in self._shards:
            if shard.fd is not None:
                os.close(shard.fd)
                shard.fd = None
        self._closed = True

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

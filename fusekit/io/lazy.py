"""Read a safetensors checkpoint tensor by tensor, never the whole model.

``LazyCheckpoint`` indexes a folder (one ``model.safetensors`` or shards named by
``model.safetensors.index.json``) from headers alone, so shapes, dtypes, byte
sizes and parameter counts are free; ``get_tensor`` then reads exactly one
tensor's bytes with ``pread`` into a fresh buffer that is freed when the caller
drops it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError
from fusekit.io.safetensors_format import TensorInfo, read_header


class LazyCheckpoint:
    """Header-indexed view of a safetensors model folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._infos: dict[str, TensorInfo] = {}
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise ModelIOError(f"{index} is not a valid safetensors index") from None
            files = list(dict.fromkeys(weight_map.values()))
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
            weight_map = {}
        if not files:
            raise ModelIOError(f"{self.folder} holds no safetensors weights")
        for name in files:
            path = self.folder / name
            if not path.is_file():
                raise ModelIOError(f"{index} names shard {name} which is missing")
            try:
                infos, _ = read_header(path)
            except (OSError, ValueError) as exc:
                raise ModelIOError(f"{path} is not a readable safetensors file ({exc})") from None
            for key, info in infos.items():
                # With an index, trust it about which file owns a key.
                if weight_map and weight_map.get(key) != name:
                    continue
                self._infos[key] = info
        absent = [k for k in weight_map if k not in self._infos]
        if absent:
            raise ModelIOError(
                f"{index} maps {absent[0]} to {weight_map[absent[0]]}, which does not hold it"
            )
        self._config: dict[str, Any] | None = None

    # -- metadata (headers only) -------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a tensor of {self.folder}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.info(name).shape

    def dtype(self, name: str) -> Any:
        """The torch dtype of ``name`` (imports torch)."""
        import torch

        return getattr(torch, self.info(name).torch_dtype_name)

    def nbytes(self, name: str) -> int:
        return self.info(name).nbytes

    def numel(self, name: str) -> int:
        return self.info(name).numel

    @property
    def config(self) -> dict[str, Any]:
        """``config.json`` as written on disk (no defaults filled in)."""
        if self._config is None:
            path = self.folder / "config.json"
            if not path.is_file():
                raise ModelIOError(f"{self.folder} has no config.json")
            self._config = json.loads(path.read_text())
        return self._config

    # -- data ------------------------------------------------------------------------
    def get_tensor(self, name: str) -> Any:
        """One tensor, read into its own buffer (no memory map stays behind)."""
        import torch

        info = self.info(name)
        buf = bytearray(info.nbytes)
        fd = os.open(info.file, os.O_RDONLY)
        try:
            view, done = memoryview(buf), 0
            while done < info.nbytes:
                n = os.preadv(fd, [view[done:]], info.start + done)
                if n <= 0:
                    raise ModelIOError(f"{info.file} is truncated while reading {name}")
                done += n
        finally:
            os.close(fd)
        dtype = getattr(torch, info.torch_dtype_name)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)

    def get_slice(self, name: str) -> _Slice:
        """A lazily indexed tensor: ``ckpt.get_slice(n)[0:4]`` reads only those rows."""
        self.info(name)
        return _Slice(self, name)


class _Slice:
    """Index into one tensor through ``safetensors.safe_open``; the file is closed after."""

    def __init__(self, ckpt: LazyCheckpoint, name: str) -> None:
        self._ckpt, self._name = ckpt, name

    @property
    def shape(self) -> tuple[int, ...]:
        return self._ckpt.shape(self._name)

    def __getitem__(self, index: Any) -> Any:
        from safetensors import safe_open

        info = self._ckpt.info(self._name)
        with safe_open(str(info.file), framework="pt") as fh:
            return fh.get_slice(self._name)[index].clone()

"""Sizes such as ``"2GB"``, read one way everywhere (recipes' ``shard_size``, the writers).

Decimal units as on the Hub and in ``save_pretrained(max_shard_size=...)``; ``KiB`` to
``TiB`` for binary ones; a bare number is bytes.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")

#: The shard size of every model fusekit writes unless a recipe says otherwise.
DEFAULT_SHARD_SIZE = "2GB"


def parse_size(size: str | int) -> int:
    """``"2GB"`` -> 2_000_000_000; a ``ValueError`` saying how to write one otherwise."""
    if isinstance(size, int):
        value = size
    else:
        m = _SIZE.fullmatch(str(size))
        unit = m.group(2).upper() if m else None
        if not m or unit not in _UNITS:
            raise ValueError(f"cannot read size {size!r}; write e.g. 2GB, 500MB or 4GiB")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return value


DEFAULT_SHARD_BYTES = parse_size(DEFAULT_SHARD_SIZE)

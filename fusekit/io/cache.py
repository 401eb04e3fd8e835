"""Where fusekit caches what it makes once: from-scratch models, converted GGUF files,
vocabulary maps.  ``FUSEKIT_CACHE`` overrides the default, ``~/.cache/fusekit``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder; ``FUSEKIT_CACHE`` overrides the default."""
    return Path(os.environ.get("FUSEKIT_CACHE", Path.home() / ".cache" / "fusekit"))

"""The KV-cache keyword of a model's ``forward``, across transformers' rename.

transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns and
goes away in 5.40); fusekit supports releases on both sides of the rename, so it
asks the model's own ``forward`` which name it takes instead of guessing a version.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def _cache_name(cls: type[Any]) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache, "use_cache": ...}`` for ``model(**...)``; ``cache=None`` = no caching."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # Annotated plain ``type``: mypy checks ``type[Any]`` against functools.cache's Hashable
    # through the class's unbound ``__hash__`` and refuses it.
    cls: type = type(base)
    return {_cache_name(cls): cache, "use_cache": cache is not None}


def output_cache(output: Any) -> Any:
    """The cache a forward returned, under either name (None if there is none)."""
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None

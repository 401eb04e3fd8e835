"""Training on ``transformers.Trainer``: spec mapping, data, freeze masks, distributed launch."""

from __future__ import annotations

from typing import Any


def train_causal_lm(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See ``fusekit.training.run.train_causal_lm`` (imported lazily: it pulls in torch)."""
    from fusekit.training.run import train_causal_lm as _train

    return _train(*args, **kwargs)


__all__ = ["train_causal_lm"]

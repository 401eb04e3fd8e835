"""Strategy tags -> implementing classes, resolved lazily.

Entries are ``"module:Class"`` strings so that listing strategies (``fusekit
strategies``, ``fusekit --help``) never imports torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from fusekit.errors import FusekitError, NotImplementedStrategyError

_STRATEGIES: dict[str, str] = {
    "calm": "fusekit.strategies.calm.strategy:CalmStrategy",
    "fusellm": "fusekit.strategies.fusellm.strategy:FuseLLMStrategy",
    "block_expansion": "fusekit.strategies.block_expansion.strategy:BlockExpansionStrategy",
    "depth_upscaling": "fusekit.strategies.depth_upscaling.strategy:DepthUpscalingStrategy",
    "finetune": "fusekit.strategies.finetune.strategy:FinetuneStrategy",
}

_DESCRIPTIONS: dict[str, str] = {
    "calm": "CALM: learn cross-attention from frozen augmenting models into a frozen anchor",
    "fusellm": "FuseLLM: continually train a target on fused source distributions",
    "block_expansion": "LLaMA Pro: insert identity copies of blocks and train only those",
    "depth_upscaling": "SOLAR: splice two trimmed copies of a model into a deeper one",
    "finetune": "baseline: plain continued training of one model (full or LoRA)",
}


def canonical_tag(tag: str) -> str:
    """Accept the CLI's hyphenated spellings (``block-expansion``) as well as the tags."""
    norm = tag.strip().lower().replace("-", "_")
    if norm not in _STRATEGIES:
        known = ", ".join(sorted(_STRATEGIES))
        raise FusekitError(f"unknown strategy {tag!r}; choose one of: {known}")
    return norm


def list_strategies() -> dict[str, str]:
    """Tag -> one-line description, in a stable order."""
    return {tag: _DESCRIPTIONS.get(tag, "") for tag in _STRATEGIES}


def register_strategy(tag: str, target: str, description: str = "") -> None:
    """Add (or replace) a strategy: ``target`` is ``"package.module:Class"``."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:Class', got {target!r}")
    _STRATEGIES[tag] = target
    _DESCRIPTIONS[tag] = description


def strategy_class(tag: str) -> Any:
    """Import and return the class behind ``tag``."""
    tag = canonical_tag(tag)
    module_name, _, attr = _STRATEGIES[tag].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotImplementedStrategyError(
                f"strategy {tag!r} is not implemented yet in this version of fusekit"
            ) from None
        raise
    return getattr(module, attr)

"""Block expansion plans (LLaMA Pro, Wu et al. 2024) and what to zero in the copies.

Split the ``L`` layers into ``N`` groups of ``L/N``; after each group insert copies
of that group's top ``P`` layers.  LLaMA-2-7B, N=8, P=1: copies of layers 3, 7,
…, 31 land at new indices 4, 9, …, 39.  A copy becomes an exact identity when
its contribution to the residual stream is zero:

* ``output_proj``: zero every output projection of the copy (attention output,
  MLP down projection, every MoE expert's and the shared expert's, biases too);
* ``post_norm``: in post-norm families (Gemma 2/3, OLMo 2) zero the gains of the
  norms applied to sub-layer outputs instead (Gemma stores 1 + w, so w = -1).
  Zeroed projections there make the first optimiser steps explode (the norm
  divides by the tiny RMS of a near-zero output); zeroed gains do not.

``auto`` picks ``post_norm`` for post-norm families and ``output_proj`` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fusekit.errors import PlanError, UnsupportedArchitectureError
from fusekit.io.arch import ArchFacts

ZERO_MODES = ("auto", "output_proj", "post_norm")


@dataclass(frozen=True)
class ExpansionPlan:
    """New layer ``i`` is a copy of old layer ``sources[i]``; ``new_layers`` are the copies."""

    sources: tuple[int, ...]
    new_layers: tuple[int, ...]
    layers_before: int

    @property
    def layers_after(self) -> int:
        return len(self.sources)


def expansion_plan(
    n_layers: int,
    groups: int | None,
    blocks_per_group: int = 1,
    positions: Sequence[int] | None = None,
) -> ExpansionPlan:
    """LLaMA Pro's interleaved plan, or copies right after explicit ``positions``.

    ``positions`` lists original (0-based) layers; a copy of each is inserted right
    after it.  ``groups`` must divide ``n_layers`` and ``blocks_per_group`` may not
    exceed the group size.
    """
    if n_layers < 1:
        raise PlanError(f"the model has {n_layers} layers; nothing to expand")
    if (groups is None) == (positions is None):
        raise PlanError("give exactly one of groups (with blocks_per_group) or positions")
    sources: list[int] = []
    new: list[int] = []
    if positions is not None:
        pos = list(positions)
        if not pos:
            raise PlanError("positions is empty; list the layers to copy, e.g. [3, 7]")
        bad = [p for p in pos if not 0 <= p < n_layers]
        if bad:
            raise PlanError(
                f"positions contains layer {bad[0]}, outside the model's layers 0..{n_layers - 1}"
            )
        if len(set(pos)) != len(pos):
            raise PlanError("positions lists a layer twice; each layer can be copied once")
        chosen = set(pos)
        for layer in range(n_layers):
            sources.append(layer)
            if layer in chosen:
                new.append(len(sources))
                sources.append(layer)
        return ExpansionPlan(tuple(sources), tuple(new), n_layers)
    assert groups is not None
    if groups < 1 or n_layers % groups:
        raise PlanError(
            f"groups: {groups} does not divide the model's {n_layers} layers; "
            f"choose a divisor of {n_layers}"
        )
    size = n_layers // groups
    if not 1 <= blocks_per_group <= size:
        raise PlanError(
            f"blocks_per_group: {blocks_per_group} must be between 1 and the group size {size}"
        )
    for g in range(groups):
        start = g * size
        sources.extend(range(start, start + size))
        for layer in range(start + size - blocks_per_group, start + size):
            new.append(len(sources))
            sources.append(layer)
    return ExpansionPlan(tuple(sources), tuple(new), n_layers)


def resolve_zero_mode(facts: ArchFacts, mode: str) -> str:
    """``auto`` -> ``post_norm`` for post-norm families, else ``output_proj``."""
    if mode not in ZERO_MODES:
        raise PlanError(f"zero: {mode!r} is not one of {', '.join(ZERO_MODES)}")
    if mode == "auto":
        return "post_norm" if facts.post_norm else "output_proj"
    if mode == "post_norm" and not facts.post_norm:
        raise UnsupportedArchitectureError(
            f"zero: post_norm needs a post-norm architecture; {facts.model_type} has no "
            "post-norm gains, use zero: output_proj (or auto)"
        )
    return mode


def zero_fills(facts: ArchFacts, mode: str) -> list[tuple[str, float]]:
    """``[(suffix regex, value)]`` that turn a copied layer into an identity."""
    mode = resolve_zero_mode(facts, mode)
    if mode == "post_norm":
        return [(re.escape(g), facts.post_norm_zero) for g in facts.post_norm_gains]
    return [(p, 0.0) for role in facts.output_projections for p in role.patterns]


def check_zero_coverage(facts: ArchFacts, mode: str, layer: int, suffixes: Iterable[str]) -> None:
    """Refuse a layer in which the zeroing would miss a whole role (no silent non-identity)."""
    mode = resolve_zero_mode(facts, mode)
    names = list(suffixes)
    if mode == "post_norm":
        missing = [g for g in facts.post_norm_gains if g not in names]
        if missing:
            raise UnsupportedArchitectureError(
                f"layer {layer} has no tensor {missing[0]}; cannot zero its post-norm gain "
                "(use zero: output_proj)"
            )
        return
    for role in facts.output_projections:
        if not any(role.matches(s) for s in names):
            raise UnsupportedArchitectureError(
                f"layer {layer} has no {role.name} projection matching "
                f"{' or '.join(role.patterns)}; the copy would not be an identity"
            )

"""The shape of a composition — what ``composition.json`` records and Θ_C is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fusekit.errors import PlanError
from fusekit.strategies.calm.masks import MASK_KINDS

AUGMENT_MODES = ("iterative", "encoder")


@dataclass
class AugmentLink:
    """One augment model's side of the composition: its width and its layer pairs."""

    hidden_size: int
    pairs: list[tuple[int, int]]


@dataclass
class CompositionConfig:
    """Everything that shapes Θ_C (and is saved in ``composition.json``)."""

    anchor_hidden_size: int
    heads: int
    augments: list[AugmentLink] = field(default_factory=list)
    mask: str = "causal"
    augment_mode: str = "iterative"
    kv_norm: bool = False
    scale_output: bool = False
    null_key: bool = False
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.mask not in MASK_KINDS:
            raise PlanError(f"mask {self.mask!r} is not one of {', '.join(MASK_KINDS)}")
        if self.augment_mode not in AUGMENT_MODES:
            raise PlanError(
                f"augment_mode {self.augment_mode!r} is not one of {', '.join(AUGMENT_MODES)}"
            )
        if self.anchor_hidden_size % self.heads:
            raise PlanError(
                f"heads={self.heads} does not divide the anchor width {self.anchor_hidden_size}; "
                "choose a divisor"
            )
        self.augments = [
            a if isinstance(a, AugmentLink) else AugmentLink(**a) for a in self.augments
        ]
        for a in self.augments:
            a.pairs = [(int(x), int(y)) for x, y in a.pairs]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augments"] = [
            {"hidden_size": a.hidden_size, "pairs": [list(p) for p in a.pairs]}
            for a in self.augments
        ]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompositionConfig:
        return cls(**d)

    def parameter_count(self) -> int:
        """Θ_C size without building it: n·(D_A·D_B + 4·D_B² + D_B) (+ D_A per kv norm)."""
        d_b = self.anchor_hidden_size
        total = 0
        for a in self.augments:
            per = a.hidden_size * d_b + 4 * d_b * d_b + d_b
            per += (a.hidden_size if self.kv_norm else 0) + (d_b if self.null_key else 0)
            total += per * len(a.pairs)
        return total

"""Architecture facts, in one place.

Everything fusekit needs to know about a model family to do layer surgery lives
here, keyed by ``config.model_type``: where the decoder layers are, which config
field counts them, which tensors are a block's *output* projections (zeroing them
turns a pre-norm block into an exact identity), which norms come *after* a
sub-layer (post-norm families, where zeroing the gain is the better identity),
which config fields hold one value per layer, and whether embeddings are tied.

Layer indices are parsed from a tensor name's structure (the component right after
the layer prefix), never by substring replacement: ``.3.`` also occurs inside
``mlp.experts.3.down_proj`` and a textual rename would corrupt MoE experts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fusekit.errors import UnsupportedArchitectureError

# Config fields that hold one value per layer, in every family that has them.
# ``layer_types`` drives sliding/full attention masks in transformers 5.
COMMON_PER_LAYER_FIELDS: tuple[str, ...] = ("layer_types", "no_rope_layers")


@dataclass(frozen=True)
class ProjectionRole:
    """One kind of output projection of a block (e.g. attention output).

    ``patterns`` are alternative regexes over the tensor-name suffix after the
    layer index (full match).  Every tensor matching any of them is part of the
    role; a copied layer must contain at least one, or fusekit would silently fail
    to zero anything.
    """

    name: str
    patterns: tuple[str, ...]

    def matches(self, suffix: str) -> bool:
        return any(re.fullmatch(p, suffix) for p in self.patterns)


def _proj(module: str) -> str:
    """Weight and bias of a linear module, as a suffix regex."""
    return re.escape(module) + r"\.(weight|bias)"


_LLAMA_ROLES = (
    ProjectionRole("attention output", (_proj("self_attn.o_proj"),)),
    ProjectionRole("mlp output", (_proj("mlp.down_proj"),)),
)


@dataclass(frozen=True)
class ArchFacts:
    """What fusekit knows about one model family (see module docstring)."""

    model_type: str
    output_projections: tuple[ProjectionRole, ...]
    layer_prefix: str = "model.layers"
    num_layers_field: str = "num_hidden_layers"
    # Gains of norms applied to a sub-layer's output before the residual add, and
    # the stored value that makes the norm output exactly zero.  Gemma stores the
    # gain as (1 + w), so w = -1; OLMo 2 stores w itself, so w = 0.
    post_norm_gains: tuple[str, ...] = ()
    post_norm_zero: float = 0.0
    per_layer_fields: tuple[str, ...] = COMMON_PER_LAYER_FIELDS
    # Per-layer fields transformers derives when config.json omits them; a raw
    # config.json without them must go through transformers to be remapped.
    derived_fields: tuple[str, ...] = ()
    # Config fields that hold a list of layer *indices* (not one value per layer).
    layer_index_fields: tuple[str, ...] = ()
    tie_default: bool = False
    head_key: str = "lm_head.weight"
    notes: tuple[str, ...] = field(default=())

    @property
    def post_norm(self) -> bool:
        """True when blocks normalise sub-layer outputs (Gemma 2/3, OLMo 2)."""
        return bool(self.post_norm_gains)

    def layer_index(self, name: str, *, anywhere: bool = False) -> tuple[int, str] | None:
        """``(index, suffix)`` for a decoder-layer tensor name, else ``None``.

        With ``anywhere`` the prefix may follow wrapper components
        (``base_model.model.model.layers.3...``), as in parameter names of a
        wrapped module; checkpoint names use the strict form.
        """
        parts = name.split(".")
        prefix = self.layer_prefix.split(".")
        k = len(prefix)
        starts = range(len(parts) - k) if anywhere else range(1)
        for j in starts:
            if parts[j : j + k] != prefix or len(parts) <= j + k + 1:
                continue
            idx = parts[j + k]
            if idx.isascii() and idx.isdigit():
                return int(idx), ".".join(parts[j + k + 1 :])
        return None

    def layer_name(self, index: int, suffix: str) -> str:
        return f"{self.layer_prefix}.{index}.{suffix}"

    def num_layers(self, config: Any) -> int:
        cfg = _as_dict(config)
        if self.num_layers_field not in cfg:
            raise UnsupportedArchitectureError(
                f"config has no {self.num_layers_field!r}; cannot count the layers "
                f"of this {self.model_type} model"
            )
        return int(cfg[self.num_layers_field])

    def ties_embeddings(self, config: Any) -> bool:
        """Whether ``lm_head`` shares the embedding (then it is never written)."""
        return bool(_as_dict(config).get("tie_word_embeddings", self.tie_default))

    def output_role(self, suffix: str) -> ProjectionRole | None:
        for role in self.output_projections:
            if role.matches(suffix):
                return role
        return None

    def exact_identity_refusal(self, config: Any) -> str | None:
        """Why inserting identity blocks cannot be exact for this config, or None."""
        cfg = _as_dict(config)
        if self.model_type == "gpt2" and cfg.get("scale_attn_by_inverse_layer_idx"):
            return (
                "GPT-2 with scale_attn_by_inverse_layer_idx=true scales attention by "
                "1/(layer index + 1), so moving layers changes the function; block "
                "expansion cannot be exact on it"
            )
        return None


def _moe_roles(*mlp_patterns: str) -> tuple[ProjectionRole, ...]:
    return (_LLAMA_ROLES[0], ProjectionRole("mlp output", mlp_patterns))


_LAYER_TYPES = ("layer_types",)
_GEMMA_POST_NORMS = ("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")
# Expert down projections appear per expert on disk and fused as one 3-D tensor
# (``mlp.experts.down_proj``) inside transformers 5 models; accept both.
_EXPERTS_DOWN = (r"mlp\.experts\.\d+\.down_proj\.weight", r"mlp\.experts\.down_proj")

_FACTS: dict[str, ArchFacts] = {
    f.model_type: f
    for f in [
        ArchFacts("llama", _LLAMA_ROLES),
        ArchFacts("mistral", _LLAMA_ROLES),
        ArchFacts("qwen2", _LLAMA_ROLES, derived_fields=_LAYER_TYPES),
        ArchFacts("qwen3", _LLAMA_ROLES, derived_fields=_LAYER_TYPES),
        ArchFacts("phi3", _LLAMA_ROLES),
        ArchFacts(
            "gemma2",
            _LLAMA_ROLES,
            post_norm_gains=_GEMMA_POST_NORMS,
            post_norm_zero=-1.0,
            tie_default=True,
            derived_fields=_LAYER_TYPES,
        ),
        ArchFacts(
            "gemma3_text",
            _LLAMA_ROLES,
            post_norm_gains=_GEMMA_POST_NORMS,
            post_norm_zero=-1.0,
            tie_default=True,
            derived_fields=_LAYER_TYPES,
        ),
        ArchFacts("olmo2", _LLAMA_ROLES, post_norm_gains=_GEMMA_POST_NORMS, post_norm_zero=0.0),
        ArchFacts(
            "gpt2",
            (
                ProjectionRole("attention output", (_proj("attn.c_proj"),)),
                ProjectionRole("mlp output", (_proj("mlp.c_proj"),)),
            ),
            layer_prefix="transformer.h",
            num_layers_field="n_layer",
            tie_default=True,
        ),
        ArchFacts(
            "phi",
            (
                ProjectionRole("attention output", (_proj("self_attn.dense"),)),
                ProjectionRole("mlp output", (_proj("mlp.fc2"),)),
            ),
        ),
        ArchFacts(
            "mixtral",
            _moe_roles(r"block_sparse_moe\.experts\.\d+\.w2\.weight", *_EXPERTS_DOWN),
        ),
        ArchFacts(
            "qwen2_moe",
            _moe_roles(
                *_EXPERTS_DOWN,
                _proj("mlp.shared_expert.down_proj"),
                _proj("mlp.down_proj"),  # dense layers listed in mlp_only_layers
            ),
            layer_index_fields=("mlp_only_layers",),
            derived_fields=_LAYER_TYPES,
        ),
        ArchFacts(
            "qwen3_moe",
            _moe_roles(*_EXPERTS_DOWN, _proj("mlp.down_proj")),
            layer_index_fields=("mlp_only_layers",),
        ),
    ]
}


def supported_model_types() -> list[str]:
    return sorted(_FACTS)


def _as_dict(config: Any) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"expected a config dict or PretrainedConfig, got {type(config).__name__}")


def arch_facts(config: Any) -> ArchFacts:
    """Facts for ``config.model_type``; unknown families are refused by name."""
    if isinstance(config, ArchFacts):
        return config
    model_type = config if isinstance(config, str) else _as_dict(config).get("model_type")
    facts = _FACTS.get(str(model_type))
    if facts is None:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported for layer surgery; supported: "
            + ", ".join(supported_model_types())
        )
    return facts

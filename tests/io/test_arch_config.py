"""Architecture facts and config remapping."""

from __future__ import annotations

import pytest

from fusekit.errors import PlanError, UnsupportedArchitectureError
from fusekit.io.arch import arch_facts, supported_model_types
from fusekit.surgery.config import remap_layers_config
from tests.tiny import ARCHS, EXTRA_ARCHS, tiny_config

REQUIRED = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2", "gpt2",
            "phi", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"]  # fmt: skip


def test_required_families_are_covered() -> None:
    assert set(REQUIRED) <= set(supported_model_types())


def test_structural_layer_index_keeps_expert_indices() -> None:
    facts = arch_facts({"model_type": "qwen2_moe"})
    name = "model.layers.3.mlp.experts.3.down_proj.weight"
    assert facts.layer_index(name) == (3, "mlp.experts.3.down_proj.weight")
    assert facts.layer_name(12, "mlp.experts.3.down_proj.weight") == (
        "model.layers.12.mlp.experts.3.down_proj.weight"
    )
    assert facts.layer_index("model.layers.12.mlp.experts.12.down_proj.weight")[0] == 12
    assert facts.layer_index("model.embed_tokens.weight") is None
    assert facts.layer_index("model.layers.rotary.inv_freq") is None
    assert facts.layer_index("lm_head.model.layers.3.x") is None
    assert facts.layer_index("base_model.model.model.layers.5.mlp.gate.weight", anywhere=True) == (
        5,
        "mlp.gate.weight",
    )


def test_gpt2_prefix() -> None:
    facts = arch_facts({"model_type": "gpt2"})
    assert facts.layer_index("transformer.h.10.attn.c_proj.bias") == (10, "attn.c_proj.bias")
    assert facts.num_layers({"model_type": "gpt2", "n_layer": 7}) == 7


@pytest.mark.parametrize(
    ("model_type", "suffix"),
    [
        ("llama", "self_attn.o_proj.weight"),
        ("llama", "mlp.down_proj.bias"),
        ("gpt2", "attn.c_proj.bias"),
        ("gpt2", "mlp.c_proj.weight"),
        ("phi", "self_attn.dense.bias"),
        ("phi", "mlp.fc2.weight"),
        ("phi3", "mlp.down_proj.weight"),
        ("mixtral", "block_sparse_moe.experts.7.w2.weight"),
        ("mixtral", "mlp.experts.down_proj"),
        ("qwen2_moe", "mlp.shared_expert.down_proj.weight"),
        ("qwen2_moe", "mlp.experts.11.down_proj.weight"),
        ("qwen3_moe", "mlp.experts.down_proj"),
    ],
)
def test_output_projections(model_type: str, suffix: str) -> None:
    assert arch_facts({"model_type": model_type}).output_role(suffix) is not None


@pytest.mark.parametrize(
    ("model_type", "suffix"),
    [
        ("llama", "self_attn.q_proj.weight"),
        ("llama", "mlp.up_proj.weight"),
        ("gpt2", "attn.c_attn.weight"),
        ("phi", "mlp.fc1.weight"),
        ("mixtral", "block_sparse_moe.experts.7.w1.weight"),
        ("qwen2_moe", "mlp.shared_expert_gate.weight"),
        ("qwen2_moe", "mlp.experts.gate_up_proj"),
    ],
)
def test_not_output_projections(model_type: str, suffix: str) -> None:
    assert arch_facts({"model_type": model_type}).output_role(suffix) is None


def test_post_norm_facts() -> None:
    assert arch_facts({"model_type": "gemma2"}).post_norm_zero == -1.0
    assert arch_facts({"model_type": "gemma3_text"}).post_norm_zero == -1.0
    olmo = arch_facts({"model_type": "olmo2"})
    assert olmo.post_norm and olmo.post_norm_zero == 0.0
    assert not arch_facts({"model_type": "llama"}).post_norm


@pytest.mark.parametrize("arch", ARCHS + EXTRA_ARCHS)
def test_every_tiny_arch_has_facts_and_tie_default(arch: str) -> None:
    config = tiny_config(arch)
    facts = arch_facts(config)
    assert facts.num_layers(config) == 4
    assert facts.ties_embeddings(config) == bool(config.tie_word_embeddings)


def test_unknown_architecture_lists_supported() -> None:
    with pytest.raises(UnsupportedArchitectureError) as err:
        arch_facts({"model_type": "bert"})
    assert "'bert'" in str(err.value) and "llama" in str(err.value)
    assert "\n" not in str(err.value)


def test_gpt2_inverse_layer_scaling_refused() -> None:
    facts = arch_facts({"model_type": "gpt2"})
    assert facts.exact_identity_refusal({"model_type": "gpt2"}) is None
    reason = facts.exact_identity_refusal(
        {"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": True}
    )
    assert reason and "scale_attn_by_inverse_layer_idx" in reason


# -- config remapping ------------------------------------------------------------------


def test_layer_types_follow_the_plan() -> None:
    cfg = tiny_config("qwen3").to_dict()
    old = cfg["layer_types"]
    new = remap_layers_config(cfg, [0, 1, 1, 2, 3, 3])
    assert new["num_hidden_layers"] == 6
    assert new["layer_types"] == [old[0], old[1], old[1], old[2], old[3], old[3]]
    assert cfg["num_hidden_layers"] == 4, "input config is not modified"


def test_layer_types_from_several_models() -> None:
    a = tiny_config("qwen3").to_dict()
    b = dict(a, layer_types=["sliding_attention"] * 4)
    new = remap_layers_config(a, [0, 3, 0], layer_configs=[a, b, b])
    assert new["layer_types"] == [a["layer_types"][0], "sliding_attention", "sliding_attention"]


def test_max_window_layers_counts_sources_below_threshold() -> None:
    cfg = dict(tiny_config("qwen2").to_dict(), max_window_layers=3)
    new = remap_layers_config(cfg, [0, 1, 2, 1, 2, 3])  # SOLAR-like splice
    assert new["max_window_layers"] == 5


def test_moe_dense_layers_and_sparse_step() -> None:
    cfg = dict(tiny_config("qwen2_moe").to_dict(), mlp_only_layers=[1], decoder_sparse_step=1)
    assert remap_layers_config(cfg, [0, 1, 1, 2])["mlp_only_layers"] == [1, 2]
    # every 2nd layer sparse: old layers 0 and 2 are dense
    cfg = dict(cfg, mlp_only_layers=[], decoder_sparse_step=2)
    new = remap_layers_config(cfg, [3, 2, 1, 0])
    assert new["mlp_only_layers"] == [1, 3] and new["decoder_sparse_step"] == 1


def test_unknown_per_layer_field_refused() -> None:
    cfg = dict(tiny_config("llama").to_dict(), rope_per_layer=[1, 2, 3, 4])
    with pytest.raises(UnsupportedArchitectureError, match="rope_per_layer"):
        remap_layers_config(cfg, [0, 1, 2, 3, 3])


def test_source_layer_outside_model() -> None:
    with pytest.raises(PlanError, match="has 4 layers"):
        remap_layers_config(tiny_config("llama").to_dict(), [0, 4])


def test_load_config_uses_config_json_when_complete(tmp_path) -> None:
    import json

    from fusekit.surgery.config import load_config

    cfg = tiny_config("qwen3").to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "marker": 1}))
    assert load_config(tmp_path)["marker"] == 1  # the text itself, not a re-derived config
    del cfg["layer_types"]
    cfg["max_window_layers"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    full = load_config(tmp_path)  # transformers derives layer_types from the old layer count
    assert full["layer_types"] == ["full_attention"] * 2 + ["sliding_attention"] * 2


def test_sparse_step_without_mlp_only_layers() -> None:
    cfg = tiny_config("qwen2_moe").to_dict()
    cfg.pop("mlp_only_layers")
    cfg["decoder_sparse_step"] = 2
    new = remap_layers_config(cfg, [0, 1, 1, 2, 3, 3])
    assert new["mlp_only_layers"] == [0, 3] and new["decoder_sparse_step"] == 1

"""Pure plan functions: SOLAR and mergekit slices, LLaMA Pro expansion, zero modes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fusekit.errors import PlanError, UnsupportedArchitectureError
from fusekit.io.arch import arch_facts
from fusekit.strategies.block_expansion.plan import (
    check_zero_coverage,
    expansion_plan,
    resolve_zero_mode,
    zero_fills,
)
from fusekit.strategies.depth_upscaling.plan import (
    LayerSource,
    check_plan,
    parse_slices,
    slices_plan,
    solar_plan,
)
from fusekit.surgery.restack import compact_layer_map


def _layers(plan: list[LayerSource]) -> list[int]:
    return [s.layer for s in plan]


def test_solar_paper_plan() -> None:
    plan = solar_plan(32, 8)
    assert len(plan) == 48
    assert _layers(plan) == list(range(24)) + list(range(8, 32))


@pytest.mark.parametrize("remove", [0, 4, 5, -1])
def test_solar_remove_out_of_range(remove: int) -> None:
    with pytest.raises(PlanError) as err:
        solar_plan(4, remove)
    assert "remove" in str(err.value) and "\n" not in str(err.value)


def test_short_form_equals_solar() -> None:
    assert slices_plan("0:24,8:32", "m") == solar_plan(32, 8, "m")


def test_mergekit_form_with_models() -> None:
    config = {
        "slices": [
            {"sources": [{"model": "a", "layer_range": [0, 2]}]},
            {"sources": [{"model": "b", "layer_range": [1, 3]}]},
            {"sources": [{"layer_range": [3, 4]}]},
        ],
        "merge_method": "passthrough",
    }
    plan = slices_plan(config, "base")
    assert [(s.model, s.layer) for s in plan] == [("a", 0), ("a", 1), ("b", 1), ("b", 2),
                                                 ("base", 3)]  # fmt: skip


def test_recipe_objects_are_accepted() -> None:
    src = SimpleNamespace(model=None, layer_range=(2, 4))
    plan = slices_plan([SimpleNamespace(sources=[src])], "m")
    assert _layers(plan) == [2, 3]


@pytest.mark.parametrize(
    ("slices", "message"),
    [
        ("0:2,3", "not like 0:24"),
        ("2:2", "0 <= start < end"),
        ([{"sources": []}], "exactly one source"),
        (
            [
                {
                    "sources": [
                        {"model": "a", "layer_range": [0, 1]},
                        {"model": "b", "layer_range": [0, 1]},
                    ]
                }
            ],
            "exactly one source",
        ),
        ([], "empty"),
    ],
)
def test_bad_slices(slices: object, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_slices(slices, "m")


def test_slice_without_any_model() -> None:
    with pytest.raises(PlanError, match="names no model"):
        parse_slices([{"sources": [{"layer_range": [0, 1]}]}], None)


def _cfg(**kw: object) -> dict:
    base = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "vocab_size": 320}  # fmt: skip
    return {**base, **kw}


def test_check_plan_range_and_width() -> None:
    check_plan(slices_plan("0:3,1:4", "a"), {"a": _cfg()}, "a")
    with pytest.raises(PlanError, match="reaches layer 4 but model a has 4 layers"):
        check_plan(slices_plan("0:3,2:5", "a"), {"a": _cfg()}, "a")
    wide = [LayerSource("a", 0), LayerSource("b", 1)]
    with pytest.raises(PlanError, match="hidden_size=128") as err:
        check_plan(wide, {"a": _cfg(), "b": _cfg(hidden_size=128)}, "a")
    assert "\n" not in str(err.value)
    with pytest.raises(PlanError, match="one architecture"):
        check_plan(wide, {"a": _cfg(), "b": _cfg(model_type="mistral")}, "a")


def test_llama_pro_paper_plan() -> None:
    plan = expansion_plan(32, 8, 1)
    assert plan.layers_after == 40
    assert list(plan.new_layers) == [4, 9, 14, 19, 24, 29, 34, 39]
    assert [plan.sources[i] for i in plan.new_layers] == [3, 7, 11, 15, 19, 23, 27, 31]
    originals = [s for i, s in enumerate(plan.sources) if i not in plan.new_layers]
    assert originals == list(range(32))


def test_two_blocks_per_group() -> None:
    plan = expansion_plan(4, 2, 2)
    assert list(plan.sources) == [0, 1, 0, 1, 2, 3, 2, 3]
    assert list(plan.new_layers) == [2, 3, 6, 7]


def test_positions() -> None:
    plan = expansion_plan(4, None, positions=[0, 2])
    assert list(plan.sources) == [0, 0, 1, 2, 2, 3]
    assert list(plan.new_layers) == [1, 4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((4, 3), "does not divide"),
        ((4, 2, 3), "between 1 and the group size 2"),
        ((4, None, 1, [4]), "outside"),
        ((4, None, 1, [1, 1]), "twice"),
        ((4, 2, 1, [1]), "exactly one"),
        ((4, None), "exactly one"),
    ],
)
def test_bad_expansion_plans(args: tuple, message: str) -> None:
    with pytest.raises(PlanError, match=message) as err:
        expansion_plan(*args)
    assert "\n" not in str(err.value)


def test_zero_modes() -> None:
    llama, gemma = arch_facts("llama"), arch_facts("gemma2")
    assert resolve_zero_mode(llama, "auto") == "output_proj"
    assert resolve_zero_mode(gemma, "auto") == "post_norm"
    assert resolve_zero_mode(gemma, "output_proj") == "output_proj"
    with pytest.raises(UnsupportedArchitectureError, match="post-norm"):
        resolve_zero_mode(llama, "post_norm")
    assert {v for _, v in zero_fills(gemma, "auto")} == {-1.0}
    assert {v for _, v in zero_fills(arch_facts("olmo2"), "auto")} == {0.0}


def test_zero_coverage_refuses_a_layer_without_projections() -> None:
    llama = arch_facts("llama")
    check_zero_coverage(llama, "auto", 0, ["self_attn.o_proj.weight", "mlp.down_proj.weight"])
    with pytest.raises(UnsupportedArchitectureError, match="mlp output"):
        check_zero_coverage(llama, "auto", 0, ["self_attn.o_proj.weight", "mlp.fc2.weight"])


def test_compact_layer_map() -> None:
    plan = expansion_plan(4, 2)
    layers = [LayerSource("/x/base", s) for s in plan.sources]
    assert compact_layer_map(layers, plan.new_layers) == (
        "base[0:2] + base[1]* + base[2:4] + base[3]*"
    )
    assert compact_layer_map(solar_plan(32, 8, "m")) == "m[0:24] + m[8:32]"

"""Recipe validation: strict keys, clear one-line problems, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusekit.errors import RecipeError
from fusekit.recipe import load_recipe, parse_recipe


def _fake_model(folder: Path, weights: str = "model.safetensors") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / weights).write_bytes(b"")
    return folder


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return _fake_model(tmp_path / "base")


def test_depth_upscaling_remove(tmp_path: Path, model: Path) -> None:
    r = load_recipe(_write(tmp_path, f"strategy: depth_upscaling\nmodel: {model}\nremove: 2\n"))
    assert r.strategy == "depth_upscaling" and r.remove == 2
    assert r.model.path == str(model)


def test_mergekit_slices_and_short_form(tmp_path: Path, model: Path) -> None:
    text = (
        "slices:\n"
        f"  - sources: [{{model: {model}, layer_range: [0, 3]}}]\n"
        f"  - sources: [{{model: {model}, layer_range: [1, 4]}}]\n"
        "merge_method: passthrough\ndtype: bfloat16\nstrategy: depth-upscaling\n"
    )
    r = load_recipe(_write(tmp_path, text))
    assert [s.sources[0].layer_range for s in r.slices] == [(0, 3), (1, 4)]
    short = parse_recipe(
        {"strategy": "depth_upscaling", "model": str(model), "slices": ["0:3", "1:4"]}
    )
    assert [s.sources[0].layer_range for s in short.slices] == [(0, 3), (1, 4)]


def _problems(tmp_path: Path, text: str, overrides: list[str] | None = None) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    lines = info.value.lines()
    assert all(line.startswith(str(path)) or line.startswith("--set") for line in lines), lines
    assert all("\n" not in line for line in lines)
    return lines


def test_misspelt_key_names_the_field(tmp_path: Path, model: Path) -> None:
    lines = _problems(tmp_path, f"strategy: depth_upscaling\nmodel: {model}\nremov: 2\nremove: 1\n")
    assert lines == [
        f"{tmp_path / 'recipe.yaml'}: remov: unknown key (misspelt? see docs/recipes.md for the fields)"
    ]


def test_nested_misspelt_key(tmp_path: Path, model: Path) -> None:
    text = (
        f"strategy: block_expansion\nmodel: {model}\ngroups: 2\n"
        "train: {steps: 3, lrr: 0.1, data: {task: code}}\n"
    )
    lines = _problems(tmp_path, text)
    assert len(lines) == 1 and ": train.lrr: unknown key" in lines[0]


def test_wrong_type(tmp_path: Path, model: Path) -> None:
    lines = _problems(tmp_path, f"strategy: block_expansion\nmodel: {model}\ngroups: two\n")
    assert len(lines) == 1 and ": groups: " in lines[0] and "integer" in lines[0]


def test_several_problems_one_line_each(tmp_path: Path, model: Path) -> None:
    text = (
        f"strategy: block_expansion\nmodel: {model}\ngroups: two\nblocks_per_group: -1\nzero: all\n"
    )
    lines = _problems(tmp_path, text)
    assert len(lines) == 3
    assert any(": zero: " in line and "'all'" in line for line in lines)


def test_unknown_strategy(tmp_path: Path) -> None:
    lines = _problems(tmp_path, "strategy: frankenmerge\n")
    assert len(lines) == 1 and "strategy:" in lines[0] and "block_expansion" in lines[0]


def test_missing_model_folder(tmp_path: Path) -> None:
    lines = _problems(
        tmp_path, f"strategy: block_expansion\nmodel: {tmp_path / 'nope'}\ngroups: 2\n"
    )
    assert len(lines) == 1 and ": model: " in lines[0] and "does not exist" in lines[0]


def test_pickle_only_model_refused_unless_allowed(tmp_path: Path) -> None:
    pickled = _fake_model(tmp_path / "pickled", "pytorch_model.bin")
    lines = _problems(tmp_path, f"strategy: block_expansion\nmodel: {pickled}\ngroups: 2\n")
    assert len(lines) == 1 and "pytorch_model.bin" in lines[0] and "allow_pickle" in lines[0]
    ok = load_recipe(
        _write(
            tmp_path,
            f"strategy: block_expansion\nmodel: {{path: {pickled}, allow_pickle: true}}\ngroups: 2\n",
        )
    )
    assert ok.model.allow_pickle


def test_one_of_remove_or_slices(tmp_path: Path, model: Path) -> None:
    lines = _problems(tmp_path, f"strategy: depth_upscaling\nmodel: {model}\n")
    assert "exactly one of remove" in lines[0]


def test_overrides(tmp_path: Path, model: Path) -> None:
    path = _write(
        tmp_path,
        f"strategy: block_expansion\nmodel: {model}\ngroups: 2\ntrain: {{steps: 3, data: {{task: code}}}}\n",
    )
    r = load_recipe(path, ["groups=4", "train.lr=1e-3", "train.steps=0"])
    assert r.groups == 4 and r.train.lr == pytest.approx(1e-3) and r.train.steps == 0
    with pytest.raises(RecipeError, match="not an index"):
        parse_recipe({"strategy": "calm", "augment": []}, overrides=["augment.3=x"])
    with pytest.raises(RecipeError, match=r"key\.path=value"):
        load_recipe(path, ["groups"])


def test_steps_zero_is_not_epochs(tmp_path: Path, model: Path) -> None:
    r = parse_recipe(
        {"strategy": "block_expansion", "model": str(model), "groups": 2, "train": {"steps": 0}}
    )
    assert r.train.steps == 0 and r.train.epochs is None
    with pytest.raises(RecipeError, match="give steps"):
        parse_recipe({"strategy": "block_expansion", "model": str(model), "groups": 2, "train": {}})


def test_not_yaml_mapping(tmp_path: Path) -> None:
    lines = _problems(tmp_path, "- a\n- b\n")
    assert "mapping" in lines[0]
    lines = _problems(tmp_path, "strategy: [unclosed\n")
    assert "not valid YAML" in lines[0]


def test_calm_pairs_must_match_augments(tmp_path: Path, model: Path) -> None:
    with pytest.raises(RecipeError, match="one list of"):
        parse_recipe(
            {
                "strategy": "calm",
                "anchor": str(model),
                "augment": [str(model)],
                "pairs": [[[0, 1]], [[1, 2]]],
                "data": {"train": {"task": "kv_arithmetic"}},
                "train": {"steps": 1},
            }
        )


def test_calm_pairs_accept_embed_for_the_embedding_output(model: Path) -> None:
    base = {
        "strategy": "calm",
        "anchor": str(model),
        "augment": [str(model)],
        "data": {"train": {"task": "kv_arithmetic"}},
        "train": {"steps": 1},
    }
    r = parse_recipe({**base, "pairs": [[[0, "embed"], [1, 0]]]})
    assert r.pairs == [[(0, -1), (1, 0)]]
    with pytest.raises(RecipeError, match=r"pairs\[0\]\[0\]\[1\]"):
        parse_recipe({**base, "pairs": [[[0, "top"]]]})
    with pytest.raises(RecipeError, match="greater than or equal to -1"):
        parse_recipe({**base, "pairs": [[[0, -2]]]})


def test_fusellm_lambda_alias(model: Path) -> None:
    r = parse_recipe(
        {
            "strategy": "fusellm",
            "target": str(model),
            "sources": [str(model)],
            "lambda": 0.5,
            "train": {"steps": 1, "data": {"task": "english"}},
        }
    )
    assert r.lam == 0.5


def test_union_noise_is_not_reported(model: Path) -> None:
    """A bad item in a data list is named once, without the 'single item' branch's complaint."""
    with pytest.raises(RecipeError) as info:
        parse_recipe(
            {
                "strategy": "finetune",
                "model": str(model),
                "train": {"steps": 1, "data": [{"task": "zzz"}, {"task": "code", "bad": 1}]},
            }
        )
    lines = info.value.lines()
    assert len(lines) == 2, lines
    assert "train.data[0].task: unknown task 'zzz'" in lines[0]
    assert "train.data[1].bad: unknown key" in lines[1]

"""User mistakes end in one ``fusekit: error:`` line and exit 2, with nothing written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import fusekit_cli, recipe_for, write_corpus, write_recipe


def _one_line(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fusekit: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_a_duplicate_recipe_key_names_both_lines(models, tmp_path: Path) -> None:
    recipe = tmp_path / "dup.yaml"
    recipe.write_text(f"strategy: block_expansion\nmodel: {models['a']}\ngroups: 2\ngroups: 4\n")
    before = recipe.read_bytes()
    proc = fusekit_cli("run", str(recipe), "-o", str(tmp_path / "out"))
    _one_line(proc, str(recipe), "'groups' appears twice (lines 3 and 4)")
    assert not (tmp_path / "out").exists() and recipe.read_bytes() == before


def test_a_recipe_that_is_not_utf8(tmp_path: Path) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("strategy: finetune\nname: caf\xe9\n".encode("latin-1"))
    _one_line(fusekit_cli("validate", str(recipe)), str(recipe), "not UTF-8")


def test_a_zero_shard_size_is_refused(models, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", {"strategy": "depth_upscaling",
                                                "model": str(models["a"]), "remove": 1,
                                                "shard_size": "0GB"})  # fmt: skip
    _one_line(fusekit_cli("validate", str(recipe)), "shard_size", "must be positive")


def test_calm_pairs_that_cannot_be_made_are_an_error(models, tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = recipe_for("calm", models, data)
    recipe["every"] = 10  # the augment has 4 layers
    path = write_recipe(tmp_path / "r.yaml", recipe)
    _one_line(fusekit_cli("run", str(path), "-o", str(tmp_path / "out")), "every: 10")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["run"], "Missing argument 'recipe'"), (["run", "x.yaml", "--bogus"], "--bogus"),
     (["fuse"], "--strategy")],
)  # fmt: skip
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    _one_line(fusekit_cli(*args), needle)


def test_eval_json_into_a_folder_is_one_line(models, tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "heldout.jsonl")
    folder = tmp_path / "results"
    folder.mkdir()
    proc = fusekit_cli("eval", str(models["a"]), "--data", str(data), "--json", str(folder))
    _one_line(proc, str(folder), "is a folder")


def test_an_output_under_a_file_is_one_line(models, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "out"
    proc = fusekit_cli("fuse", "--strategy", "block_expansion", "--model", str(models["a"]),
                       "--groups", "2", "-o", str(out))  # fmt: skip
    _one_line(proc, "not a folder")


def test_a_nan_loss_stops_the_run_naming_the_step(models, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan-model"
    shutil.copytree(models["a"], broken)
    state = load_file(broken / "model.safetensors")
    state["model.norm.weight"] = torch.full_like(state["model.norm.weight"], float("nan"))
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = recipe_for("finetune", {**models, "a": broken}, data)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    out = tmp_path / "out"
    _one_line(fusekit_cli("run", str(path), "-o", str(out)), "loss became nan at step 1")
    assert not out.exists()
    assert not (tmp_path / ".out.checkpoints").exists()  # nothing resume could use


def test_outputs_follow_the_umask(models, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = fusekit_cli("fuse", "--strategy", "block_expansion", "--model", str(models["a"]),
                       "--groups", "2", "-o", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_recipe_with_no_problem_validates(models, tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"strategy": "block_expansion", "model": str(models["a"]),
                                    "groups": 2}))  # fmt: skip
    proc = fusekit_cli("validate", str(path))
    assert proc.returncode == 0 and "ok:" in proc.stdout


def test_a_checkpoint_missing_a_tensor_is_refused(models, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "incomplete"
    shutil.copytree(models["a"], broken)
    state = load_file(broken / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    data = write_corpus(tmp_path / "corpus.jsonl")
    path = write_recipe(tmp_path / "r.yaml", recipe_for("finetune", {**models, "a": broken}, data))
    proc = fusekit_cli("run", str(path), "-o", str(tmp_path / "out"))
    _one_line(proc, "model.layers.1.mlp.up_proj.weight", "incomplete")
    assert not (tmp_path / "out").exists()


def test_a_masked_lm_is_not_taken_for_a_causal_lm(models, tmp_path: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(bert)  # fmt: skip
    shutil.copy(models["a"] / "tokenizer.json", bert / "tokenizer.json")
    shutil.copy(models["a"] / "tokenizer_config.json", bert / "tokenizer_config.json")
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = recipe_for("calm", models, data)
    recipe["anchor"] = str(bert)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    _one_line(fusekit_cli("run", str(path), "-o", str(tmp_path / "out")), "BertForMaskedLM")

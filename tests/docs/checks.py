"""What a doc command's run must show: the run records and the checks on them."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.collect import REPO, DocItem, doc_items
from tests.docs.conftest import Result, Workspace

if sys.version_info >= (3, 11):
    pass
else:  # pytest depends on tomli before 3.11
    pass


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


def train_section_parses(item: DocItem) -> None:
    """A ``train:`` fragment: every key is a TrainSpec field with a value it accepts."""
    from fusekit.recipe.common import TrainSpec

    train = yaml.safe_load(item.text)["train"]
    assert isinstance(train.pop("data"), str)  # a data file, checked to exist when a run reads it
    spec = TrainSpec.model_validate(train)
    assert spec.loss_on == "assistant" and spec.chat_template


def streaming_section_parses(item: DocItem) -> None:
    """The streaming ``train:`` fragment validates, streams, and would not by epochs."""
    from fusekit.recipe.common import TrainSpec

    train = yaml.safe_load(item.text)["train"]
    assert isinstance(train.pop("data"), str)
    spec = TrainSpec.model_validate(train)
    assert spec.streaming and spec.shuffle_buffer == 10_000
    steps = train.pop("steps")
    with pytest.raises(ValueError, match="give steps"):
        TrainSpec.model_validate({**train, "epochs": 1})
    assert steps


def builtin_conversations_load(item: DocItem) -> None:
    """A ``train:``/``data:`` fragment naming built-in conversations: both sections
    validate, and the data they name is conversations that load."""
    from fusekit.data.causal_lm import load_records
    from fusekit.data.chat import is_conversational
    from fusekit.recipe.common import DataSpec, TrainSpec

    fragment = yaml.safe_load(item.text)
    train = TrainSpec.model_validate({**fragment["train"], "steps": 1})
    data = DataSpec.model_validate(fragment["data"])
    for ref, n in ((train.data, 400), (data.eval[0], 64)):
        records = load_records(ref)
        assert len(records) == n and all(map(is_conversational, records))


def curve_fragment_validates(item: DocItem) -> None:
    """A ``train:``/``data:`` fragment with ``eval_steps``: it validates as a recipe's
    sections and asks for the curve; without its ``data.eval`` it is refused."""
    from pydantic import ValidationError

    from fusekit.recipe.common import BaseRecipe

    fragment = yaml.safe_load(item.text)
    recipe = BaseRecipe.model_validate(fragment)
    assert recipe.train is not None and recipe.train.eval_steps == 25 and recipe.eval_data()
    with pytest.raises(ValidationError, match=r"data\.eval"):
        BaseRecipe.model_validate({"train": fragment["train"]})


def fusellm_chat_recipe_validates(item: DocItem) -> None:
    """A FuseLLM recipe on conversations: its train section validates, it names one
    template per source, and the template file it names is in the repository and renders
    a conversation."""
    from fusekit.recipe.common import TrainSpec
    from fusekit.strategies.fusellm.recipe import FuseLLMRecipe
    from fusekit.tasks import task_tokenizer
    from tests.training.test_chat import TALK

    fragment = yaml.safe_load(item.text)  # the model folders need not exist here
    TrainSpec.model_validate(fragment["train"])
    recipe = FuseLLMRecipe.model_construct(**fragment)
    assert recipe.source_chat_templates is not None
    assert len(recipe.source_chat_templates) == len(recipe.sources)
    template = (REPO / str(recipe.source_chat_templates[0])).read_text()
    tokenizer = task_tokenizer("code", kind="bpe")
    text = tokenizer.apply_chat_template(TALK["messages"], tokenize=False, chat_template=template)
    assert "<start_of_turn>model\n" in str(text)


def prints(expected: str) -> Check:
    """The item ran and printed ``expected`` on a line of its own."""

    def check(r: Ran) -> None:
        out = r.res.ok().stdout
        assert expected in out.splitlines(), out[-2000:]

    return check


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
    # the machine's memory is this machine's: the line's form is compared, not its figure
    printed, shown = (
        re.sub(r"(fits|does NOT fit) the [\d.]+ [kMGT]?B of .+", r"\1 the <memory> of <device>", t)
        for t in (r.res.stdout.strip(), sample.text.strip())
    )
    assert printed == shown, f"{sample.where} is stale:\n{r.res.stdout}"


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

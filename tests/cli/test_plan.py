"""``--dry-run``: a readable plan with disk and memory figures for every strategy and
every shipped recipe, ``--json`` for machines, and nothing trained or written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from fusekit.estimates import model_facts, training_memory
from fusekit.recipe.common import LocalModel
from tests.pipeline.conftest import STRATEGIES, cli, recipe_for, write_corpus, write_recipe
from tests.pipeline.conftest import models as models  # the shared tiny models, a fixture

ROOT = Path(__file__).resolve().parents[2]
# recipes/real names converted real checkpoints: tests/real/test_real_recipes.py plans them
SHIPPED = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if p.parent.name != "real")


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("plan") / "corpus.jsonl")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_plans_disk_and_memory(
    strategy: str, models: dict[str, Path], corpus: Path, tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", recipe_for(strategy, models, corpus))
    before = _files(tmp_path)
    text = cli("run", str(recipe), "-o", str(tmp_path / "out"), "--dry-run")
    assert text.code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"plan: {recipe_for(strategy, models, corpus)['strategy']}")
    labels = {line.split()[0] for line in lines[1:] if line.strip()}
    assert {"disk", "memory", "training", "parameters"} <= labels, text.stdout
    assert "training step ~" in text.stdout and "{" not in lines[0]

    as_json = cli("run", str(recipe), "-o", str(tmp_path / "out"), "--dry-run", "--json")
    plan = json.loads(as_json.stdout)
    assert plan["disk_bytes"] > 0 and plan["training_memory_bytes"]["total"] > 0
    assert plan["trainable_parameters"] > 0 and plan["train"]["steps"] == 6
    assert _files(tmp_path) == before  # nothing written, no checkpoint folder


def test_surgery_plans_the_layer_map(models: dict[str, Path], tmp_path: Path) -> None:
    out = cli("fuse", "--strategy", "block_expansion", "--model", str(models["a"]),
              "--groups", "2", "-o", str(tmp_path / "o"), "--dry-run")  # fmt: skip
    assert out.code == 0, out.stderr
    assert "4 -> 6: [0:2] + [1]* + [2:4] + [3]*   (* new)" in out.stdout
    assert "surgery ~" in out.stdout and "training step" not in out.stdout  # --steps 0: no training
    assert not (tmp_path / "o").exists()


def test_json_needs_dry_run(models: dict[str, Path], tmp_path: Path) -> None:
    out = cli("fuse", "--strategy", "depth_upscaling", "--model", str(models["a"]),
              "--remove", "1", "-o", str(tmp_path / "o"), "--json")  # fmt: skip
    assert out.code == 2 and "--json goes with --dry-run" in out.stderr
    assert not (tmp_path / "o").exists()


def test_a_compare_file_given_to_run_names_the_command(tmp_path: Path) -> None:
    path = ROOT / "recipes" / "quickstart" / "depth-upscaling.yaml"
    out = cli("run", str(path), "--dry-run")
    assert out.code == 2
    assert out.stderr.strip() == (
        f"fusekit: error: {path}: a compare file (runs and parents), not a recipe; "
        f"run it with: fusekit compare {path}"
    )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_plans_without_training(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From-scratch parents are planned from their configs; none is trained."""
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # recipes write to out/…: it must stay absent
    text = path.read_text()
    compare = "runs:" in text and "strategy:" not in text.split("runs:")[0]
    command = "compare" if compare else "run"
    out = cli(command, str(path), "--dry-run")
    assert out.code == 0, out.stderr
    assert out.stdout.count("  disk ") >= 1 and out.stdout.count("  memory ") >= 1, out.stdout
    plan = json.loads(cli(command, str(path), "--dry-run", "--json").stdout)
    plans = [run["plan"] for run in plan["runs"]] if compare else [plan]
    assert all(p["disk_bytes"] > 0 for p in plans)
    assert all(p.get("training_memory_bytes", {}).get("total", 0) > 0 for p in plans)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache" / "models").exists()


def test_from_scratch_arithmetic_matches_the_header_plan(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """The config-only sizes of a parent not trained yet equal what the headers give."""
    from fusekit.recipe import parse_recipe
    from fusekit.registry import strategy_class
    from fusekit.strategies.block_expansion.plan import expansion_plan
    from fusekit.strategies.depth_upscaling.plan import LayerSource

    recipe = parse_recipe(
        {"strategy": "block_expansion", "model": str(models["a"]), "groups": 2}, source="t"
    )
    strategy = strategy_class("block_expansion")(recipe)
    from_headers = strategy.plan()
    parent = model_facts(LocalModel(path=str(models["a"])))
    plan = expansion_plan(parent.layers, 2)
    arithmetic = strategy.scratch_described(
        parent, [LayerSource(parent.name, i) for i in plan.sources], plan.new_layers
    )
    for key in ("layers_after", "parameters_after", "disk_bytes", "layer_map"):
        assert arithmetic[key] == from_headers[key], key


def test_model_facts_count_tied_weights_once(tmp_path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=2, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(tmp_path / "m")
    facts = model_facts(LocalModel(path=str(tmp_path / "m")))
    assert facts.parameters == sum(p.numel() for p in model.parameters())
    assert facts.layer_parameters == sum(p.numel() for p in model.model.layers[0].parameters())
    assert (facts.layers, facts.hidden, facts.vocab) == (3, 16, 100)
    assert facts.disk_bytes_per_parameter == 4 and not facts.from_scratch
    del torch


def test_lora_parameters_match_peft(models: dict[str, Path]) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fusekit.estimates import lora_parameters

    kwargs: dict[str, Any] = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
    real = get_peft_model(
        AutoModelForCausalLM.from_pretrained(models["a"]),
        LoraConfig(task_type="CAUSAL_LM", **kwargs),
    )
    expected = real.get_nb_trainable_parameters()[0]
    assert lora_parameters(LocalModel(path=str(models["a"])), kwargs) == expected


def test_training_memory_parts() -> None:
    from fusekit.estimates import CPU_RUNTIME_BYTES, ModelFacts, activation_bytes
    from fusekit.recipe.common import TrainSpec

    m = ModelFacts("m", "llama", layers=2, hidden=64, heads=4, intermediate=128, vocab=1000,
                   parameters=10_000, layer_parameters=3000, disk_bytes_per_parameter=2,
                   from_scratch=False)  # fmt: skip
    spec = TrainSpec(steps=1, batch_size=2, seq_len=16)
    source = replace(m, name="source")
    one = training_memory(held=[(m, 4), (source, 2)], trainable=100, backprop=[m],
                          forward_only=[source], train=spec)  # fmt: skip
    # a model run beside the trained one is held whole by every rank: a part of its own
    assert one["weights"] == 4 * 10_000 and one["source_weights"] == 2 * 10_000
    assert one["gradients"] == 4 * 100 and one["optimizer"] == 8 * 100  # 16 B with the master
    assert one["logits"] == 4 * 2 * 16 * (3 * 1000 + 1000)
    # per token and layer: 6h + 4i values in fp32 and 5h fp32 norm values
    assert one["activations"] == 2 * 16 * 2 * ((6 * 64 + 4 * 128) * 4 + 5 * 64 * 4)
    assert one["runtime"] == CPU_RUNTIME_BYTES  # no GPU here
    assert one["total"] == sum(v for k, v in one.items() if k not in ("total", "options"))
    # what each memory setting not yet made would give, for the dry run's advice
    options = one["options"]
    assert options["train.gradient_checkpointing: true"]["activations"] < one["activations"]
    assert options["train.batch_size: 1 with grad_accum: 2"]["logits"] == one["logits"] // 2
    two = training_memory(held=[(m, 4)], trainable=100, backprop=[m], forward_only=[],
                          train=spec.model_copy(update={"batch_size": 4}))  # fmt: skip
    assert two["activations"] == 2 * one["activations"]
    # eager attention keeps the probabilities (a·s per token); SDPA keeps none
    eager = activation_bytes(m, 2, 16, precision="fp32", attention="eager", checkpointing=False)
    assert eager - one["activations"] == 2 * 16 * 2 * 4 * 16 * 4
    # checkpointing keeps each layer's input and recomputes one layer at a time
    kept = activation_bytes(m, 2, 16, precision="fp32", attention=None, checkpointing=True)
    assert kept == 2 * 16 * 64 * 4 * 2 + one["activations"] // 2
    # a frozen layer's linear inputs (3h + i a token) are not kept: its weights take no gradient
    frozen = activation_bytes(m, 2, 16, precision="fp32", attention=None, checkpointing=False,
                              frozen_layers=1)  # fmt: skip
    assert one["activations"] - frozen == 2 * 16 * (3 * 64 + 128) * 4
    bf16 = activation_bytes(m, 2, 16, precision="bf16", attention=None, checkpointing=False)
    assert bf16 == 2 * 16 * 2 * ((6 * 64 + 4 * 128) * 2 + 5 * 64 * 4)
    # the optimizer's state follows train.optim
    for optim, per in (
        ("adafactor", 0),
        ("sgd", 0),
        ("adamw_torch_fused", 8),
        ("adagrad", 4),
        ("lion_8bit", 1),
        ("paged_ademamix_32bit", 12),
        ("adamw_torch_4bit", 1),
    ):
        got = training_memory(held=[], trainable=100, backprop=[], forward_only=[],
                              train=spec.model_copy(update={"optim": optim}))  # fmt: skip
        assert got["optimizer"] == per * 100, optim


def _seven_billion(folder: Path) -> Path:
    """Llama-2-7B's config and a safetensors file whose header names every tensor in
    fp16: a sparse file of the right size, so the dry run reads headers, never weights."""
    import struct

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests.training.conftest import make_tokenizer

    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                         max_position_embeddings=4096, tie_word_embeddings=False)  # fmt: skip
    config.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    header, offset = {}, 0
    for name, tensor in model.state_dict().items():
        size = tensor.numel() * 2
        header[name] = {"dtype": "F16", "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}  # fmt: skip
        offset += size
    raw = json.dumps(header).encode()
    with open(folder / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    return folder


@pytest.mark.parametrize(
    "optim", ["adamw_torch", "adamw_torch_fused", "sgd", "adagrad", "rmsprop", "adafactor"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_optimizer_state_is_what_the_optimizer_keeps(optim: str, dtype: torch.dtype) -> None:
    """The estimate's state per parameter equals what the optimizer transformers builds
    for ``optim`` holds after a step, for those torch ships (Adafactor's factored
    moments of a 64 × 64 matrix count as about none)."""
    from transformers import Trainer, TrainingArguments

    from fusekit.estimates import optimizer_state_bytes

    weight = torch.nn.Parameter(torch.randn(64, 64, dtype=dtype))
    args = TrainingArguments(output_dir="unused", optim=optim, use_cpu=True, report_to=[])
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    optimizer = cls([weight], **kwargs)
    weight.grad = torch.randn_like(weight)
    optimizer.step()
    held = sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t) and t.numel() > 1)  # fmt: skip
    expected = optimizer_state_bytes(optim, weight.element_size()) * weight.numel()
    assert held <= weight.numel() * 0.25 if expected == 0 else held == expected


def test_a_seven_billion_model_plans_with_the_usual_accounting(
    corpus: Path, tmp_path: Path
) -> None:
    """16 bytes per trained parameter (fp32 master and gradient, two AdamW moments),
    activations on top, and what to change when the step exceeds the machine."""
    folder = _seven_billion(tmp_path / "llama-7b")
    recipe = {"strategy": "finetune", "model": str(folder),
              "train": {"data": str(corpus), "steps": 10, "batch_size": 1, "seq_len": 2048,
                        "precision": "bf16"}}  # fmt: skip
    path = write_recipe(tmp_path / "r.yaml", recipe)
    result = cli("run", str(path), "-o", str(tmp_path / "out"), "--dry-run", "--json")
    assert result.code == 0, result.stderr
    plan = json.loads(result.stdout)
    params = plan["models"]["model"]["parameters"]
    assert 6.7e9 < params < 6.8e9  # Llama-2-7B
    memory = plan["training_memory_bytes"]
    assert memory["weights"] + memory["gradients"] + memory["optimizer"] == 16 * params
    # bf16 activations of 32 layers at 2,048 tokens: (6h + 4i)·2 + 5h·4 bytes per token
    assert memory["activations"] == 2048 * 32 * ((6 * 4096 + 4 * 11008) * 2 + 5 * 4096 * 4)
    assert memory["logits"] == 4 * 2048 * 32000 * 3
    assert memory["total"] > plan["memory_device"]["bytes"]  # 2 cores, 24 GB: no 7B training
    advice = dict(plan["memory_advice"])
    assert advice["train.gradient_checkpointing: true"] < memory["total"] - 13e9
    fsdp = [k for k in advice if k.startswith("FSDP2 over")]
    assert fsdp and advice[fsdp[0]] <= plan["memory_device"]["bytes"]
    assert not (tmp_path / "out").exists()
    text = cli("run", str(path), "-o", str(tmp_path / "out"), "--dry-run")
    assert (
        "does NOT fit" in text.stdout and "with train.gradient_checkpointing: true" in text.stdout
    )


def test_an_fsdp_config_divides_what_it_shards(
    models: dict[str, Path], corpus: Path, tmp_path: Path
) -> None:
    path = write_recipe(tmp_path / "r.yaml", recipe_for("finetune", models, corpus))
    config = tmp_path / "fsdp.yaml"
    config.write_text("distributed_type: FSDP\nnum_processes: 4\nfsdp_config: {fsdp_version: 2}\n")
    one = json.loads(cli("run", str(path), "--dry-run", "--json").stdout)["training_memory_bytes"]
    four = json.loads(cli("run", str(path), "--dry-run", "--json", "--accelerate-config",
                          str(config)).stdout)["training_memory_bytes"]  # fmt: skip
    assert four["ranks"] == 4
    for part in ("weights", "gradients", "optimizer"):
        assert four[part] == one[part] // 4
    for part in ("source_weights", "activations", "logits", "runtime"):
        assert four[part] == one[part]

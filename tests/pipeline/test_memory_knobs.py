"""The memory knobs of every strategy: gradient checkpointing, optimizer, load dtype, attention.

Gradient checkpointing may change memory and time only: one training step of each
strategy, built the way the strategy builds it and run through ``fit``, gives the
same loss and gradients with it on as off, and every trainable parameter gets a
gradient — the check that catches reentrant checkpointing behind frozen embeddings
(block expansion's old layers, LoRA's base, CALM's anchor), which trains nothing.
``load:`` reaches every model a strategy loads, frozen ones included.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fusekit.errors import RecipeError
from fusekit.pipeline.checks import checked
from fusekit.recipe import parse_recipe
from fusekit.recipe.common import TrainSpec
from fusekit.training.args import to_training_arguments
from fusekit.training.fit import fit
from fusekit.training.trainer import FusekitTrainer, trainable_predicate
from fusekit.units import Built
from tests.pipeline.conftest import STRATEGIES, cli, recipe_for, write_corpus, write_recipe

# ---------------------------------------------------------------- helpers


def _recipe(strategy: str, models: dict[str, Path], data: Path, **top: Any) -> dict[str, Any]:
    recipe = recipe_for(strategy, models, data)
    recipe["train"].update(steps=1, lr=1e-6, max_grad_norm=1e9)
    return {**recipe, **top}


def _build(recipe: dict[str, Any], workdir: Path) -> Built:
    """The main unit exactly as the pipeline builds it: validated, prepared, built."""
    _, strategy = checked(parse_recipe(recipe))
    prepared = strategy.prepare(workdir)
    return strategy.build(prepared, strategy.main_unit)


def _wake(built: Built) -> None:
    """Give zero-initialised trainable weights (LoRA's B, expansion's and Θ_C's output
    projections) small seeded values: at zero they pass no gradient to the weights
    before them, and "every trainable parameter gets a gradient" would be false."""
    keep = trainable_predicate(built.trainable)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in sorted(built.model.named_parameters()):
            if keep(name) and param.requires_grad and not bool(param.any()):
                param.copy_(0.02 * torch.randn(param.shape, generator=generator))


def _recording(cls: type, seen: dict[str, Any]) -> type:
    """``cls`` keeping the first step's loss, gradients and optimizer."""

    class Recording(cls):  # type: ignore[misc, valid-type]
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            loss = super().training_step(model, inputs, num_items_in_batch)
            seen["loss"] = loss.detach().clone()
            seen["grads"] = {
                n: p.grad.detach().clone()
                for n, p in model.named_parameters()
                if p.grad is not None
            }
            seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
            seen["optimizer"] = type(self.optimizer.optimizer).__name__
            return loss

    return Recording


def _one_step(recipe: dict[str, Any], workdir: Path) -> dict[str, Any]:
    built = _build(recipe, workdir / "out")
    _wake(built)
    seen: dict[str, Any] = {}
    built.trainer_class = _recording(built.trainer_class or FusekitTrainer, seen)
    spec = parse_recipe(recipe).train
    fit(built, spec, workdir / "checkpoints", fingerprint={"test": 1})
    return seen


@pytest.fixture
def forward_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Calls of the Llama MLP and of CALM's cross-attention block: a checkpointed block
    runs its forward again in the backward pass, so on must count more than off."""
    from transformers.models.llama.modeling_llama import LlamaMLP

    from fusekit.strategies.calm.composition import CrossBlock

    calls = {"mlp": 0, "cross": 0}
    for cls, key in ((LlamaMLP, "mlp"), (CrossBlock, "cross")):
        original = cls.forward

        def counted(self: Any, *a: Any, _f: Any = original, _k: str = key, **k: Any) -> Any:
            calls[_k] += 1
            return _f(self, *a, **k)

        monkeypatch.setattr(cls, "forward", counted)
    return calls


# ---------------------------------------------------------------- gradient checkpointing


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradient_checkpointing_keeps_loss_and_gradients(
    strategy: str, models: dict[str, Path], tmp_path: Path, forward_calls: dict[str, int]
) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    runs = {}
    counts = {}
    for on in (False, True):
        recipe = _recipe(strategy, models, data)
        recipe["train"]["gradient_checkpointing"] = on
        before = dict(forward_calls)
        runs[on] = _one_step(recipe, tmp_path / str(on))
        counts[on] = {k: forward_calls[k] - before[k] for k in forward_calls}
    off, on = runs[False], runs[True]
    # checkpointing ran: blocks were recomputed in the backward pass
    assert counts[True]["mlp"] > counts[False]["mlp"], counts
    if strategy == "calm":
        assert counts[True]["cross"] > counts[False]["cross"], counts
    torch.testing.assert_close(on["loss"], off["loss"], atol=1e-6, rtol=0)
    assert on["trainable"] == off["trainable"] and on["trainable"]
    assert set(on["grads"]) == set(off["grads"]) == on["trainable"], "a gradient is missing"
    for name in on["trainable"]:
        torch.testing.assert_close(on["grads"][name], off["grads"][name], atol=1e-6, rtol=1e-5)
        assert bool(on["grads"][name].any()), f"{name} got a zero gradient"


def test_checkpointing_and_optimizer_reach_training_arguments(tmp_path: Path) -> None:
    spec = TrainSpec(steps=1, gradient_checkpointing=True, optim="adafactor")
    args = to_training_arguments(spec, tmp_path)
    assert args.optim == "adafactor"
    assert args.gradient_checkpointing is True
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    plain = to_training_arguments(TrainSpec(steps=1), tmp_path)
    assert plain.optim == "adamw_torch" and not plain.gradient_checkpointing


def test_the_recipe_optimizer_trains(models: dict[str, Path], tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = _recipe("finetune", models, data)
    recipe["train"]["optim"] = "adafactor"
    assert _one_step(recipe, tmp_path)["optimizer"] == "Adafactor"


# ---------------------------------------------------------------- load dtype and attention


def _loaded(built: Built) -> Iterator[tuple[str, Any]]:
    """(role, model) for every model a built unit loaded, frozen ones included."""
    model = built.model
    if hasattr(model, "augments"):  # CALM: Θ_C is the composition's own
        yield "anchor", model.anchor
        for k, augment in enumerate(model.augments):
            yield f"augment_{k}", augment
        return
    yield "model", model
    for k, source in enumerate(built.trainer_kwargs.get("source_models") or []):
        yield f"source_{k}", source


def _dtype(model: Any) -> torch.dtype:
    """The one dtype of a model's loaded weights (LoRA's adapters are peft's, in fp32)."""
    dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert len(dtypes) == 1, dtypes
    return dtypes.pop()


def _attention(model: Any) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return str(base.config._attn_implementation)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_load_settings_reach_every_loaded_model(
    strategy: str, models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    load = {"dtype": "bf16", "attn_implementation": "eager"}
    built = _build(_recipe(strategy, models, data, load=load), tmp_path / "out")
    roles = dict(_loaded(built))
    assert len(roles) == {"calm": 2, "fusellm": 2}.get(strategy, 1), roles.keys()
    for role, model in roles.items():
        assert _dtype(model) == torch.bfloat16, role
        assert _attention(model) == "eager", role


@pytest.mark.parametrize("strategy", ["calm", "fusellm"])
def test_frozen_models_default_to_the_training_precision(
    strategy: str, models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = _recipe(strategy, models, data)
    recipe["train"]["precision"] = "bf16"
    built = _build(recipe, tmp_path / "bf16")
    expected = {"model": torch.float32}  # the trained model keeps fp32 master weights
    assert {r: _dtype(m) for r, m in _loaded(built)} == {
        role: expected.get(role, torch.bfloat16) for role, _ in _loaded(built)
    }
    recipe["train"]["precision"] = "fp32"
    built = _build(recipe, tmp_path / "fp32")
    assert {_dtype(m) for _, m in _loaded(built)} == {torch.float32}
    assert {_attention(m) for _, m in _loaded(built)} == {"sdpa"}  # transformers' default


def test_a_models_own_load_wins_over_the_recipes(models: dict[str, Path], tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = _recipe("calm", models, data, load={"dtype": "bf16", "attn_implementation": "eager"})
    recipe["augment"] = [{"path": str(models["b"]), "load": {"dtype": "fp32"}}]
    got = {r: (_dtype(m), _attention(m)) for r, m in _loaded(_build(recipe, tmp_path / "c"))}
    assert got == {"anchor": (torch.bfloat16, "eager"), "augment_0": (torch.float32, "eager")}


def test_fusellm_source_precision_sits_between_a_sources_load_and_the_recipes(
    models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = _recipe("fusellm", models, data, load={"dtype": "bf16"}, source_precision="fp32")
    got = {r: _dtype(m) for r, m in _loaded(_build(recipe, tmp_path / "a"))}
    assert got == {"model": torch.bfloat16, "source_0": torch.float32}
    assert parse_recipe(recipe).source_dtype() == "fp32"
    recipe["sources"] = [{"path": str(models["b"]), "load": {"dtype": "bf16"}}]
    got = {r: _dtype(m) for r, m in _loaded(_build(recipe, tmp_path / "b"))}
    assert got == {"model": torch.bfloat16, "source_0": torch.bfloat16}


def test_the_knobs_reach_every_rank(models: dict[str, Path], tmp_path: Path) -> None:
    """Ranks rebuild from the job file ``run_distributed`` writes: the recipe as JSON and
    the prepared inputs, whose ``load`` is each model's own."""
    import json

    from fusekit.recipe import recipe_to_dict
    from fusekit.units import Prepared

    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = _recipe("calm", models, data, load={"dtype": "bf16", "attn_implementation": "eager"})
    recipe["augment"] = [{"path": str(models["b"]), "load": {"dtype": "fp32"}}]
    recipe["train"].update(gradient_checkpointing=True, optim="adafactor")
    parsed, strategy = checked(parse_recipe(recipe))
    on_rank = parse_recipe(json.loads(json.dumps(recipe_to_dict(parsed))))
    assert on_rank == parsed
    prepared = strategy.prepare(tmp_path / "out")
    again = Prepared.model_validate(json.loads(json.dumps(prepared.model_dump(mode="json"))))
    assert again.inputs["augment_0"].load == parsed.augment[0].load
    assert again.inputs["augment_0"].load is not None and again.inputs["anchor"].load is None


def test_surgery_output_dtype_is_shared_by_both_surgeries(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """``dtype:`` casts what block expansion writes too (it used to be silently dropped)."""
    import json

    from fusekit.api import run

    recipe = {"strategy": "block_expansion", "model": str(models["a"]), "groups": 2,
              "dtype": "bfloat16"}  # fmt: skip
    run(recipe, output=tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "bfloat16" in (config.get("dtype"), config.get("torch_dtype"))


# ---------------------------------------------------------------- refusals, one line each


def _problems(recipe: dict[str, Any]) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(recipe, source="r.yaml")
    return caught.value.lines()


@pytest.mark.parametrize(
    ("where", "value", "words"),
    [
        ("optim", "adam", ["r.yaml: train.optim: unknown optimizer 'adam'", "adamw_torch_fused"]),
        ("optim", "galore_adamw", ["r.yaml: train.optim: ", "optim_target_modules"]),
        ("attn", "flash", ["r.yaml: load.attn_implementation: unknown attention", "sdpa"]),
        ("model_attn", "fast", ["r.yaml: model.load.attn_implementation: unknown attention"]),
    ],
)
def test_a_bad_knob_is_one_recipe_line(
    where: str, value: str, words: list[str], models: dict[str, Path], tmp_path: Path
) -> None:
    recipe = _recipe("finetune", models, write_corpus(tmp_path / "corpus.jsonl"))
    if where == "optim":
        recipe["train"]["optim"] = value
    elif where == "attn":
        recipe["load"] = {"attn_implementation": value}
    else:
        recipe["model"] = {"path": str(models["a"]), "load": {"attn_implementation": value}}
    problems = _problems(recipe)
    assert len(problems) == 1 and all(w in problems[0] for w in words), problems


def test_run_refuses_bad_knobs_before_any_work(models: dict[str, Path], tmp_path: Path) -> None:
    recipe = _recipe("finetune", models, write_corpus(tmp_path / "corpus.jsonl"))
    recipe["train"]["optim"] = "adam"
    recipe["load"] = {"attn_implementation": "flash"}
    path = write_recipe(tmp_path / "r.yaml", recipe)
    done = cli("run", str(path), "-o", str(tmp_path / "out"))
    lines = done.stderr.strip().splitlines()
    assert done.code == 2 and len(lines) == 2, done.stderr
    assert lines[0].startswith(f"fusekit: error: {path}: train.optim: unknown optimizer 'adam'")
    assert lines[1].startswith(f"fusekit: error: {path}: load.attn_implementation: unknown")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed"
)
def test_an_optimizer_whose_package_is_missing_is_refused_up_front(
    models: dict[str, Path], tmp_path: Path
) -> None:
    recipe = _recipe("finetune", models, write_corpus(tmp_path / "corpus.jsonl"))
    recipe["train"]["optim"] = "adamw_bnb_8bit"
    assert _problems(recipe) == [
        "r.yaml: train.optim: adamw_bnb_8bit needs the bitsandbytes package, which is not installed"
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is not None, reason="flash_attn is installed"
)
def test_flash_attention_without_its_package_is_refused_up_front(
    models: dict[str, Path], tmp_path: Path
) -> None:
    recipe = _recipe("finetune", models, write_corpus(tmp_path / "corpus.jsonl"))
    recipe["load"] = {"attn_implementation": "flash_attention_2"}
    (line,) = _problems(recipe)
    assert line.startswith("r.yaml: load.attn_implementation: flash_attention_2 needs the "
                           "flash_attn package")  # fmt: skip

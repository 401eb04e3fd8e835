"""End to end: three sources with three tokenizers train a target that saves and loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fusekit.api import run
from fusekit.strategies.fusellm.recipe import FuseLLMRecipe
from fusekit.strategies.fusellm.strategy import FuseLLMStrategy
from tests.fusellm.conftest import CORPUS


def _recipe(model_dirs: dict, data: Path, **fields: Any) -> Any:
    train = {
        "data": str(data),
        "steps": 3,
        "lr": 1e-3,
        "batch_size": 4,
        "seq_len": 32,
        "log_steps": 1,
    }
    train.update(fields.pop("train", {}))
    return FuseLLMRecipe(
        strategy="fusellm",
        target=str(model_dirs["target"]),
        sources=[str(model_dirs[k]) for k in ("bpe", "sp", "wp")],
        train=train,
        **fields,
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS[:8] * 2))
    return path


@pytest.mark.parametrize(
    ("mode", "align", "fusion"), [("online", "offsets", "mince"), ("offline", "mined", "avgce")]
)
def test_three_tokenizers_train_and_save(
    model_dirs: dict, data: Path, tmp_path: Path, mode: str, align: str, fusion: str
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = _recipe(model_dirs, data, mode=mode, align=align, fusion=fusion, lam=0.5)
    before = {
        k: v.clone()
        for k, v in AutoModelForCausalLM.from_pretrained(model_dirs["target"]).state_dict().items()
    }
    out = tmp_path / "out"
    result = run(recipe, output=out)
    training = result.training
    assert training is not None and training.trained and training.steps == 3
    assert len(result.details["sources"]) == 3
    assert all(0.0 < s["aligned_positions"] <= 1.0 for s in result.details["sources"])
    assert training.extra["fusion"]["batches"] == 3
    assert training.loss_curve  # compare charts it
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.vocab_size == len(tok) + 7  # the padded vocabulary survived
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed
    assert not (out / ".checkpoints").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("fusion" in r and "clm" in r for r in log)


def test_target_as_source_goes_first(model_dirs: dict, data: Path, tmp_path: Path) -> None:
    recipe = FuseLLMRecipe(
        strategy="fusellm",
        target=str(model_dirs["target"]),
        sources=[str(model_dirs["sp"]), str(model_dirs["target"])],
        train={"data": str(data), "steps": 2, "batch_size": 4, "seq_len": 32},
        lam=0.5,
    )
    result = run(recipe, output=tmp_path / "out")
    first = result.details["sources"][0]
    assert first["is_target"] and first["aligned_positions"] == 1.0
    # Only candidates in the padded rows past the tokenizer (ids >= len(tokenizer)) are dropped.
    assert result.training is not None and result.training.extra["fusion"]["kept"][0] > 0.9


def test_plan_reads_no_weights(model_dirs: dict, data: Path) -> None:
    plan = FuseLLMStrategy(_recipe(model_dirs, data)).plan()
    assert plan["top_k"] == 10 and len(plan["sources"]) == 3 and plan["lambda"] == 0.9


def test_steps_zero_saves_the_target(model_dirs: dict, data: Path, tmp_path: Path) -> None:
    recipe = _recipe(model_dirs, data, train={"steps": 0})
    out = tmp_path / "out"
    result = run(recipe, output=out)
    assert result.training is not None and not result.training.trained
    assert (out / "config.json").is_file()


def test_source_precision_auto_follows_training_and_bf16_stands_alone(
    model_dirs: dict, data: Path, tmp_path: Path
) -> None:
    assert _recipe(model_dirs, data).source_dtype() == "fp32"
    assert _recipe(model_dirs, data, train={"precision": "bf16"}).source_dtype() == "bf16"
    recipe = _recipe(model_dirs, data, source_precision="bf16")  # the target stays fp32
    strategy = FuseLLMStrategy(recipe)
    prepared = strategy.prepare(tmp_path)
    assert prepared.plan["source_precision"] == "bf16"
    built = strategy.build(prepared, strategy.main_unit)
    assert next(built.model.parameters()).dtype == torch.float32
    sources = built.trainer_kwargs["source_models"]
    assert len(sources) == 3 and all(next(m.parameters()).dtype == torch.bfloat16 for m in sources)
    fp32 = FuseLLMStrategy(_recipe(model_dirs, data)).plan()["training_memory_bytes"]
    half = prepared.plan["training_memory_bytes"]
    assert half["source_weights"] * 2 == fp32["source_weights"]  # the sources' part halves
    assert half["weights"] == fp32["weights"]  # the target stays fp32


def test_offline_stores_are_kept_per_source_dtype(
    model_dirs: dict, data: Path, tmp_path: Path
) -> None:
    from fusekit.io.cache import cache_root

    def stores() -> set[str]:
        root = cache_root() / "fusellm_topk"
        return {p.name for p in root.iterdir()} if root.is_dir() else set()

    before = stores()
    fp32 = run(_recipe(model_dirs, data, mode="offline", lam=0.5), output=tmp_path / "a")
    after_fp32 = stores()
    bf16 = run(
        _recipe(model_dirs, data, mode="offline", lam=0.5, source_precision="bf16"),
        output=tmp_path / "b",
    )
    # bf16 logits are not fp32's: the bf16 run extracts its own stores, never reads fp32's
    assert len(after_fp32 - before) in (0, 3) and len(stores() - after_fp32) == 3
    assert fp32.training is not None and bf16.training is not None
    assert fp32.training.final_loss != bf16.training.final_loss


def test_prompt_completion_trains_and_fuses_on_the_completion_only(
    model_dirs: dict, tmp_path: Path
) -> None:
    """A prompt/completion record is one chunk whose prompt carries no loss: the labelled
    target tokens spell the completion (a token straddling the boundary counts as answer),
    and with λ = 1 the fused objective is the model's own loss on those labels, as in
    plain fine-tuning; ``loss_on: all`` scores the prompt too."""
    from fusekit.strategies.fusellm.losses import fused_objective

    pairs = [("def add(a, b):", "\n    return a + b\n"), ("import os", "\nimport sys\n")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
    for loss_on, expected in ((None, [c for _, c in pairs]), ("all", [p + c for p, c in pairs])):
        recipe = _recipe(model_dirs, data, train={"loss_on": loss_on}, **{"lambda": 1.0})
        strategy = FuseLLMStrategy(recipe)
        built = strategy.build(strategy.prepare(tmp_path), strategy.main_unit)
        batch = built.collator([built.dataset[i] for i in range(len(built.dataset))])
        tok = built.tokenizer
        for row, labels, text in zip(batch["input_ids"], batch["labels"], expected, strict=True):
            kept = [int(t) for t, label in zip(row, labels, strict=True) if label != -100]
            assert tok.decode(kept, skip_special_tokens=True).strip() == text.strip()
        with torch.no_grad():
            logits = built.model(input_ids=batch["input_ids"]).logits
            plain = built.model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        loss, _ = fused_objective(logits, batch["labels"], None, 1.0)
        torch.testing.assert_close(loss, plain)


def test_a_completion_cut_off_by_seq_len_is_left_out(
    model_dirs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt that fills ``seq_len`` leaves its completion no token: the chunk would be a
    row without a label (a batch of them, a 0/0 loss), so it is left out and said, on
    every run."""
    import fusekit.data.causal_lm as causal_lm

    said: list[str] = []
    monkeypatch.setattr(causal_lm.log, "warning", said.append)
    pairs = [("def add(a, b):", "\n    return a + b\n"), ("import os " * 40, "\nimport sys\n")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
    for _ in range(2):  # made, then read from the cache: said both times
        strategy = FuseLLMStrategy(_recipe(model_dirs, data))
        built = strategy.build(strategy.prepare(tmp_path), strategy.main_unit)
        assert len(built.dataset) == 1
        assert len(said) == 1 and "fusellm: 1 of 2 examples have no trained token" in said.pop()

"""Training Θ_C with the Trainer, saving and re-attaching, baselines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fusekit.errors import DataError, ModelIOError
from fusekit.recipe.common import TrainSpec
from fusekit.strategies.base import Built
from fusekit.strategies.calm.baselines import lora_model, lora_parameters_per_rank, random_like
from fusekit.strategies.calm.build import compose_from_paths, plan_composition
from fusekit.strategies.calm.io import load_composed, save_composition
from fusekit.strategies.calm.trainer import (
    CalmTrainer,
    composition_collator,
    composition_dataset,
    is_composition_parameter,
)
from fusekit.training.args import to_training_arguments
from fusekit.training.fit import fit
from tests.calm.conftest import TEXTS, random_ids

RECORDS = [{"prompt": t[:10], "completion": t[10:]} for t in TEXTS] * 4


def _train(model, spec: TrainSpec, checkpoints: Path):
    """Θ_C through the pipeline's ``fit``, as the strategy trains it."""
    built = Built(
        model=model,
        dataset=composition_dataset(model, RECORDS, spec.seq_len),
        collator=composition_collator(model),
        trainable=is_composition_parameter,
        trainer_class=CalmTrainer,
    )
    return fit(built, spec, checkpoints, fingerprint={})


def _spec(**kw) -> TrainSpec:
    base = dict(steps=4, lr=1e-2, batch_size=4, seq_len=48, log_steps=1, schedule="constant")
    return TrainSpec(**{**base, **kw})


def test_trainer_changes_only_the_composition(bases: dict[str, Path], tmp_path: Path) -> None:
    model = compose_from_paths(bases["anchor"], [bases["augment"]])
    frozen = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if not n.startswith("composition.")
    }
    theta = {n: p.detach().clone() for n, p in model.composition.named_parameters()}
    trainer = CalmTrainer(
        model=model,
        args=to_training_arguments(_spec(), tmp_path / "ckpt"),
        train_dataset=composition_dataset(model, RECORDS, 48),
        data_collator=composition_collator(model),
    )
    trainer.train()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert all(not torch.equal(p, theta[n]) for n, p in model.composition.named_parameters())
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.composition.parameters()}
    assert not model.anchor.training and not model.augments[0].training


def test_answer_only_loss(bases: dict[str, Path]) -> None:
    model = compose_from_paths(bases["anchor"], [bases["augment"]])
    batch = composition_collator(model)([composition_dataset(model, RECORDS, 48)[0]])
    prompt_len = len(model.anchor_tokenizer(RECORDS[0]["prompt"])["input_ids"])
    assert (batch["labels"][0, :prompt_len] == -100).all()
    assert (batch["labels"][0, prompt_len:] != -100).all()
    assert batch["labels"][0, -1] == model.anchor_tokenizer.eos_token_id


@pytest.fixture(scope="module")
def saved(bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("calm_saved")
    for name in ("anchor", "augment", "meta"):  # private copies: one test edits a base
        shutil.copytree(bases[name], root / name)
    model = compose_from_paths(
        root / "anchor", [root / "augment", root / "meta"], every=4, mask="causal"
    )
    assert _train(model, _spec(steps=3), root / "ckpt").steps == 3
    save_composition(model, root / "out")
    return model, root


def test_save_load_identical_logits(saved) -> None:
    model, root = saved
    doc = json.loads((root / "out" / "composition.json").read_text())
    assert doc["anchor"]["hash"].startswith("sha256:") and len(doc["augments"]) == 2
    assert doc["augments"][1]["tokenizer"]["shared_with_anchor"] is False
    assert doc["heads"] == 4 and doc["mask"] == "causal"
    from safetensors.torch import load_file

    stored = load_file(str(root / "out" / "composition.safetensors"))
    assert set(stored) == set(model.composition.state_dict())  # Θ_C only
    loaded = load_composed(root / "out")
    ids = random_ids(2, 10, seed=7)
    with torch.no_grad():
        assert (model(ids)["logits"] - loaded(ids)["logits"]).abs().max().item() == 0.0
    kw = dict(max_new_tokens=6, eos_token_id=None)
    assert model.generate(ids, **kw).tolist() == loaded.generate(ids, **kw).tolist()


def test_changed_base_is_refused(saved) -> None:
    _, root = saved
    copy = root / "anchor_edited"
    shutil.copytree(root / "anchor", copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5 if cfg.get("rms_norm_eps") != 1e-5 else 1e-6
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelIOError, match="check_hashes=False") as info:
        load_composed(root / "out", bases={"anchor": copy})
    assert "\n" not in str(info.value)
    assert load_composed(root / "out", bases={"anchor": copy}, check_hashes=False) is not None


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelIOError, match=r"composition\.json"):
        load_composed(tmp_path)


def test_steps_zero_saves_the_identity(bases: dict[str, Path], tmp_path: Path) -> None:
    model = compose_from_paths(bases["anchor"], [bases["augment"]])
    assert not _train(model, _spec(steps=0), tmp_path / "c").trained
    save_composition(model, tmp_path / "out")
    loaded = load_composed(tmp_path / "out")
    ids = random_ids(1, 8, seed=8)
    with torch.no_grad():
        assert (loaded(ids)["logits"] - loaded.anchor(ids).logits).abs().max().item() == 0.0


def test_plan_reads_no_weights(bases: dict[str, Path]) -> None:
    plan = plan_composition(bases["anchor"], [bases["augment"]], every=4)
    model = compose_from_paths(bases["anchor"], [bases["augment"]], every=4)
    assert plan["pairs"] == [[[3, 0], [7, 2]]]
    assert plan["composition_parameters"] == model.composition.num_parameters()
    assert plan["anchor_parameters"] == model.parameter_report()["anchor_parameters"]


@pytest.mark.parametrize("anchor", ["anchor", "gpt2"])
def test_lora_baseline_matches_the_budget(bases: dict[str, Path], anchor: str) -> None:
    model = compose_from_paths(bases[anchor], [bases["augment"]], every=2)
    budget = model.composition.num_parameters()
    peft_model, info = lora_model(model.anchor, budget)
    assert info["lora_parameters"] == info["rank"] * lora_parameters_per_rank(model.anchor)
    assert abs(info["lora_parameters"] - budget) / budget < 0.05
    # the composed anchor itself is untouched, and its hooks did not follow the copy
    assert not any("lora" in n for n, _ in model.anchor.named_parameters())
    ids = random_ids(1, 6, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(ids).logits, model.anchor(ids).logits)


def test_random_augment_has_the_same_shape(bases: dict[str, Path]) -> None:
    model = compose_from_paths(bases["anchor"], [bases["augment"]])
    fresh = random_like(model.augments[0], seed=1)
    assert [p.shape for p in fresh.parameters()] == [
        p.shape for p in model.augments[0].parameters()
    ]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(fresh.parameters(), model.augments[0].parameters(), strict=False)
    )


def test_offsets_dataset_cuts_long_texts_instead_of_truncating() -> None:
    """A different-tokenizer composition trains on every piece of a long document."""
    from fusekit.strategies.calm.collate import offsets_examples
    from tests.calm.conftest import VOCAB, make_tokenizer

    anchor, augment = make_tokenizer(VOCAB, "bytelevel"), make_tokenizer(VOCAB, "metaspace")
    text = " ".join(f"word{i % 37} and more text number {i}." for i in range(200))
    qa = {"prompt": "q:", "completion": " a"}
    data = list(offsets_examples([{"text": text}, qa], anchor, [augment], [False], seq_len=32))
    assert len(data) > 10  # one long record becomes many examples, plus the QA pair
    n_tokens = len(anchor(text, add_special_tokens=False)["input_ids"])
    anchor_ids = [len(ex["input_ids"]) for ex in data]
    assert max(anchor_ids) <= 32 and sum(anchor_ids[:-1]) >= n_tokens * 0.9


def test_offsets_examples_read_a_file_as_they_go(tmp_path: Path) -> None:
    """Over a file, the records are read in two passes, one at a time (``RecordStream``),
    and make the examples the records held in a list make."""
    from fusekit.data.causal_lm import RecordStream
    from fusekit.strategies.calm.collate import offsets_examples
    from tests.calm.conftest import VOCAB, make_tokenizer

    anchor, augment = make_tokenizer(VOCAB, "bytelevel"), make_tokenizer(VOCAB, "metaspace")
    records = [{"text": f"document {i}: " + "some words here. " * (i % 7 + 1)} for i in range(40)]
    records.insert(5, {"prompt": "q:", "completion": " a"})
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    streamed = list(offsets_examples(RecordStream(str(path)), anchor, [augment], [False], 24))
    assert streamed == list(offsets_examples(records, anchor, [augment], [False], 24))
    assert streamed[-1]["prompt_chars"] == 2 and len(streamed) > 10


def test_forward_returns_a_transformers_output(saved) -> None:
    """``load_composed(dir)(input_ids=ids).logits`` as for any transformers causal LM."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    _, root = saved
    loaded = load_composed(root / "out")
    ids = random_ids(1, 8, seed=9)
    with torch.no_grad():
        out = loaded(input_ids=ids)
    assert isinstance(out, CausalLMOutputWithPast) and out.loss is None
    assert out.logits.shape[:2] == ids.shape and torch.equal(out["logits"], out.logits)
    with torch.no_grad():
        assert loaded(input_ids=ids, labels=ids).loss is not None


def test_offsets_examples_of_a_conversation_score_the_anchor_template_spans() -> None:
    """Different tokenizers: the conversation is rendered in the anchor's template, the
    anchor's labelled tokens spell the assistant turns with their end-of-turn marker, the
    augment reads the same rendered text, and nothing of the text gets an EOS or BOS."""
    from fusekit.data.chat import Renderer, conversation
    from fusekit.strategies.calm.collate import offsets_examples
    from fusekit.strategies.calm.tokens import encode_text
    from tests.calm.conftest import VOCAB, make_tokenizer
    from tests.training.test_chat import CHATML, TALK

    anchor, augment = make_tokenizer(VOCAB, "bytelevel"), make_tokenizer(VOCAB, "metaspace")
    for tok in (anchor, augment):
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    renderer = Renderer(anchor, CHATML)
    (example,) = offsets_examples([TALK], anchor, [augment], [False], seq_len=512,
                                  renderer=renderer)  # fmt: skip
    text, spans = renderer.spans("x", conversation("x", TALK), "assistant")
    runs, previous = [], False
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != -100:
            runs.append([token]) if not previous else runs[-1].append(token)
        previous = label != -100
    assert [anchor.decode(r) for r in runs] == [text[s.start : s.stop] for s in spans]
    assert anchor.decode(example["input_ids"]) == text  # no EOS or BOS added to the template's
    read = encode_text(augment, text, add_special_tokens=False).ids
    assert example["augments"][0]["input_ids"] == read  # the same rendered text, all of it
    with pytest.raises(DataError, match="talk: record 0: conversations need the anchor's chat"):
        list(offsets_examples([TALK], anchor, [augment], [False], seq_len=512, source="talk"))


def test_examples_for_augments_with_their_own_tokenizers_are_cached_as_arrow(
    bases: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every model's tokens of each example are made once and read memory-mapped: the
    cache holds exactly the examples, a second build reads it, and the collator batches
    rows read back from Arrow as it batches the examples themselves."""
    import fusekit.data.tokenized as tokenized
    from fusekit.strategies.calm.collate import offsets_examples

    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "cache"))
    model = compose_from_paths(bases["anchor"], [bases["augment"], bases["meta"]], every=4,
                               mask="causal")  # fmt: skip
    records = [{"text": t} for t in TEXTS] + RECORDS
    made = list(offsets_examples(records, model.anchor_tokenizer, model.augment_tokenizers,
                                 model.shared_tokenizer, 48))  # fmt: skip
    dataset = composition_dataset(model, records, 48)
    assert [dict(row) for row in dataset] == made
    said: list[str] = []
    monkeypatch.setattr(tokenized.log, "info", said.append)
    again = composition_dataset(model, records, 48)
    assert said and all("read from the cache" in line for line in said)
    assert list(again) == list(dataset)
    collate = composition_collator(model)
    read, kept = collate([again[i] for i in range(4)]), collate(made[:4])
    assert read.keys() == kept.keys()
    for name in ("input_ids", "labels", "anchor_keys", "prompt_chars"):
        assert torch.equal(read[name], kept[name]), name
    for mine, theirs in zip(read["augment_inputs"], kept["augment_inputs"], strict=True):
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # the key follows the augments' tokenizers: another set is tokenised anew
    other = compose_from_paths(bases["anchor"], [bases["meta"]], every=4, mask="causal")
    said.clear()
    composition_dataset(other, records, 48)
    assert said == ["fusekit: data: tokenising"]


def test_examples_whose_answer_lies_past_seq_len_are_left_out_and_said_on_every_build(
    bases: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With augments of their own tokenizers, an example whose completion lies past
    ``seq_len`` trains nothing (a batch of them, a 0/0 loss): it is left out and said,
    again when the examples are read from the cache; data that keeps none is refused."""
    import fusekit.data.causal_lm as causal_lm

    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "cache"))
    said: list[str] = []
    monkeypatch.setattr(causal_lm.log, "warning", said.append)
    model = compose_from_paths(bases["anchor"], [bases["meta"]], every=4, mask="causal")
    assert not any(model.shared_tokenizer)
    long = {"prompt": " ".join(TEXTS) * 2, "completion": " the end"}
    records = [*RECORDS, long]
    for _ in range(2):  # made, then read from the cache
        dataset = composition_dataset(model, records, 48)
        assert len(dataset) == len(RECORDS)
        assert len(said) == 1 and f"1 of {len(records)} examples have no trained token" in said[0]
        assert "train.seq_len=48" in said.pop()
    entries = sorted((tmp_path / "cache" / "data").iterdir())
    with pytest.raises(DataError, match=r"raise train\.seq_len"):
        composition_dataset(model, [long], 48)
    assert sorted((tmp_path / "cache" / "data").iterdir()) == entries  # nothing published


@pytest.mark.parametrize("augments", [["augment"], ["augment", "meta"]])
def test_the_output_layer_runs_where_the_loss_looks_only(
    bases: dict[str, Path], augments: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training's ``loss_only`` forward gives the loss and Θ_C's gradients of the full
    forward, with the anchor's output layer run at the scored positions only."""
    model = compose_from_paths(bases["anchor"], [bases[a] for a in augments], every=2,
                               mask="causal")  # fmt: skip
    for block in (b for bl in model.composition.blocks for b in bl):  # not the identity
        torch.nn.init.normal_(block.o_proj.weight, std=0.05)
    records = [{"prompt": t[:30], "completion": t[30:]} for t in TEXTS]
    dataset = composition_dataset(model, records, 48)
    batch = composition_collator(model)([dataset[i] for i in range(len(dataset))])
    head = model.anchor.get_output_embeddings()
    rows: list[int] = []
    monkeypatch.setattr(head, "forward", lambda x, f=head.forward: (rows.append(x.shape[1]),
                                                                      f(x))[1])  # fmt: skip
    params = list(model.trainable_parameters())
    results = []
    for loss_only in (False, True):
        out = model(**batch, loss_only=loss_only)
        results.append((out.loss, torch.autograd.grad(out.loss, params), out.logits))
    (full, full_grads, logits), (sparse, sparse_grads, none) = results
    assert none is None and logits is not None
    width = batch["input_ids"].shape[1]
    scored = int((batch["labels"][:, 1:] != -100).any(dim=0).sum())
    assert rows == [width, scored] and scored < width - 1
    torch.testing.assert_close(sparse, full)
    for a, b in zip(sparse_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b)

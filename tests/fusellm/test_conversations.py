"""FuseLLM on conversations: the target trains in its template, each source reads its own.

Checked here: the target's tokens and labels are fine-tuning's; a position is paired only
inside the messages' contents (or right before one), where both models have read the
same content and go on to read content, so template text never pairs; with one tokenizer
and two templates every content position pairs; with λ = 1 the objective is assistant-only
fine-tuning (loss and gradients); the run reports the aligned shares; a source without a
template is one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fusekit.data.chat import Renderer, conversation
from fusekit.strategies.fusellm.conversations import (
    align_conversation,
    content_share,
    placed,
    source_example,
    target_example,
)
from fusekit.strategies.fusellm.recipe import FuseLLMRecipe
from fusekit.strategies.fusellm.strategy import FuseLLMStrategy
from tests.training.test_chat import CHATML, GEMMA, TALK

TALKS = [
    TALK,
    {"messages": [{"role": "user", "content": "user"},  # content equal to a role header
                  {"role": "assistant", "content": "  import os  "}]},  # trimmed by Gemma
    {"prompt": [{"role": "user", "content": "Name a module."}],
     "completion": [{"role": "assistant", "content": "json"}]},
]  # fmt: skip


def _tokenizer(model_dirs: dict, name: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dirs[name])


def _pair(model_dirs: dict, source: str, talk: dict) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    target_tok, source_tok = _tokenizer(model_dirs, "target"), _tokenizer(model_dirs, source)
    conv = conversation("t", talk)
    target, scored = target_example(
        Renderer(target_tok, CHATML), "t", conv, conv.default_loss_on, 512
    )
    read = source_example(Renderer(source_tok, GEMMA), "t", conv, 2048)
    return target, read, scored, align_conversation(read, target)


def test_the_targets_tokens_and_labels_are_fine_tunings(model_dirs: dict) -> None:
    tok = _tokenizer(model_dirs, "target")
    for talk in TALKS:
        conv = conversation("t", talk)
        target, scored = target_example(Renderer(tok, CHATML), "t", conv, conv.default_loss_on, 64)
        ids, labels = Renderer(tok, CHATML).encode("t", conv, conv.default_loss_on, 64)
        assert target.encoding.ids.tolist() == ids
        assert scored.tolist() == [label != -100 for label in labels]


@pytest.mark.parametrize("source", ["bpe", "sp", "wp"])
def test_positions_pair_only_where_both_read_the_same_content_and_go_on_reading_it(
    model_dirs: dict, source: str
) -> None:
    paired = 0
    for talk in TALKS:
        target, read, _, hits = _pair(model_dirs, source, talk)
        tgt = placed(target.encoding.spans, target.content, target.content)
        src = placed(read.encoding.spans, read.content, target.content)
        assert all(c is not None for c in target.content) and all(
            c is not None for c in read.content
        )
        paired += int((hits >= 0).sum())
        for t in np.flatnonzero(hits >= 0):
            s = hits[t]
            assert tgt[t].tolist() == src[s].tolist() and tgt[t, 1] >= 0  # the same place
            assert tgt[t + 1, 1] > tgt[t + 1, 0] >= 0  # the target reads content next
            assert src[s + 1, 1] > src[s + 1, 0] >= 0  # and so does the source
        # a header token never pairs, even the "user" header when a content is "user" too
        target_tok = _tokenizer(model_dirs, "target")
        tokens = target_tok.convert_ids_to_tokens(target.encoding.ids.tolist())
        for t in np.flatnonzero(hits >= 0):
            assert tokens[t] not in ("<|im_start|>", "<|im_end|>")
    assert paired > 20


def test_one_tokenizer_in_two_templates_pairs_every_content_position(model_dirs: dict) -> None:
    """The same tokenizer reads each content the same way in both templates, so every loss
    position that predicts content has its source position: the templates cost nothing.
    (Contents with surrounding whitespace are left out: a template that trims them lets a
    space merge into the first word in one text and not in the other.)"""
    tok = _tokenizer(model_dirs, "target")
    aligned, targets, scored = [], [], []
    for talk in (TALKS[0], TALKS[2]):
        conv = conversation("t", talk)
        target, mask = target_example(Renderer(tok, CHATML), "t", conv, conv.default_loss_on, 512)
        read = source_example(Renderer(tok, GEMMA), "t", conv, 2048)
        aligned.append(align_conversation(read, target))
        targets.append(target)
        scored.append(mask)
    assert content_share(aligned, targets, scored) == 1.0


def _recipe(model_dirs: dict, data: Path, **fields: Any) -> FuseLLMRecipe:
    train = {"data": str(data), "steps": 2, "lr": 1e-3, "batch_size": 3, "seq_len": 128,
             "log_steps": 1, "chat_template": CHATML}  # fmt: skip
    fields.setdefault("source_chat_templates", [GEMMA, CHATML])
    return FuseLLMRecipe(
        strategy="fusellm",
        target=str(model_dirs["target"]),
        sources=[str(model_dirs[k]) for k in ("bpe", "sp")],
        train=train,
        **fields,
    )


@pytest.fixture
def talks(tmp_path: Path) -> Path:
    path = tmp_path / "talks.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in TALKS))
    return path


def test_lambda_one_on_conversations_is_assistant_only_fine_tuning(
    model_dirs: dict, talks: Path, tmp_path: Path
) -> None:
    from fusekit.strategies.fusellm.losses import fused_objective

    (tmp_path / "sp_template.jinja").write_text(GEMMA)
    recipe = _recipe(model_dirs, talks, **{"lambda": 1.0})
    recipe.source_chat_templates = [GEMMA, str(tmp_path / "sp_template.jinja")]
    strategy = FuseLLMStrategy(recipe)
    built = strategy.build(strategy.prepare(tmp_path), strategy.main_unit)
    batch = built.collator([built.dataset[i] for i in range(len(built.dataset))])
    renderer = Renderer(built.tokenizer, CHATML)
    for row, labels, talk in zip(batch["input_ids"], batch["labels"], TALKS, strict=True):
        conv = conversation("t", talk)
        ids, expected = renderer.encode("t", conv, conv.default_loss_on, 128)
        assert row[: len(ids)].tolist() == ids and labels[: len(ids)].tolist() == expected
        assert (labels[len(ids) :] == -100).all()
    model = built.model
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    fused, _ = fused_objective(logits, batch["labels"], None, 1.0)
    fused_grads = torch.autograd.grad(fused, list(model.parameters()))
    plain = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss
    plain_grads = torch.autograd.grad(plain, list(model.parameters()))
    torch.testing.assert_close(fused, plain)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_a_run_on_conversations_trains_and_reports_the_aligned_shares(
    model_dirs: dict, talks: Path, tmp_path: Path
) -> None:
    from fusekit.api import run

    result = run(_recipe(model_dirs, talks), output=tmp_path / "out")
    assert result is not None and result.training is not None
    assert result.training.steps == 2
    assert result.details["conversations"] == len(TALKS) and result.details["chunks"] == 0
    for n, stat in enumerate(result.details["sources"]):
        assert 0 < stat["aligned_content_positions"] <= 1
        assert stat["aligned_loss_positions"] < stat["aligned_content_positions"]  # ends of turns
        assert "% of content positions" in result.details[f"source_{n}_alignment"]


def test_a_source_without_a_template_is_one_line_naming_it(
    model_dirs: dict, talks: Path, tmp_path: Path
) -> None:
    from fusekit.errors import DataError

    recipe = _recipe(model_dirs, talks)
    recipe.source_chat_templates = None
    strategy = FuseLLMStrategy(recipe)
    with pytest.raises(DataError, match="source_chat_templates") as caught:
        strategy.build(strategy.prepare(tmp_path), strategy.main_unit)
    assert str(model_dirs["bpe"]) in str(caught.value)
    with pytest.raises(ValueError, match="one per source"):
        _recipe(model_dirs, talks, source_chat_templates=[GEMMA])


@pytest.mark.parametrize(("template", "header"), [(CHATML, "<|im_start|>user\n"),
                                                  (GEMMA, "<start_of_turn>user\n")])  # fmt: skip
def test_a_content_equal_to_its_role_header_is_found_after_the_header(
    model_dirs: dict, template: str, header: str
) -> None:
    from fusekit.strategies.fusellm.conversations import content_spans

    renderer = Renderer(_tokenizer(model_dirs, "target"), template)
    conv = conversation("t", TALKS[1])
    text = renderer.render("t", conv.messages)
    spans = content_spans(renderer, "t", conv, text)
    data = text.encode()
    (a, b), (c, d) = spans  # type: ignore[misc]
    assert data[a:b] == b"user" and data[:a].endswith(header.encode())
    assert data[c:d] == b"import os"  # trimmed content, located whichever way it is written


def test_conversations_with_nothing_to_train_within_seq_len_are_left_out_and_said(
    model_dirs: dict, talks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation whose trained turns lie past ``seq_len`` would give a row without a
    label (a batch of them, a 0/0 loss): it is left out with a warning, and when every
    conversation is, the run is one line."""
    import fusekit.data.causal_lm as module
    from fusekit.errors import DataError

    said: list[str] = []
    monkeypatch.setattr(module.log, "warning", said.append)
    long = {"messages": [{"role": "user", "content": "word " * 80},
                         {"role": "assistant", "content": "yes"}]}  # fmt: skip
    with talks.open("a") as fh:
        fh.write(json.dumps(long) + "\n")
    strategy = FuseLLMStrategy(_recipe(model_dirs, talks))
    built = strategy.build(strategy.prepare(tmp_path), strategy.main_unit)
    assert len(built.dataset) == len(TALKS)
    assert said and f"fusellm: 1 of {len(TALKS) + 1} examples have no trained token" in said[0]
    recipe = _recipe(model_dirs, talks)
    recipe.train.seq_len = 8
    strategy = FuseLLMStrategy(recipe)
    with pytest.raises(DataError, match=r"raise train\.seq_len"):
        strategy.build(strategy.prepare(tmp_path), strategy.main_unit)


#: ChatML that refuses a conversation without a user turn (as Qwen's templates do).
NEEDS_USER = (
    "{% if messages | selectattr('role', 'equalto', 'user') | list | length == 0 %}"
    "{{ raise_exception('No user query found in messages.') }}{% endif %}" + CHATML
)


def test_contents_are_found_where_the_template_puts_them_whatever_surrounds_them(
    model_dirs: dict,
) -> None:
    """A template that refuses a system prompt alone is fine (no prefix is rendered), and
    contents that also occur in the delimiters ("im", "end") are found where they are."""
    from fusekit.strategies.fusellm.conversations import content_spans

    talk = {"messages": [{"role": "system", "content": "im"}, {"role": "user", "content": "end"},
                         {"role": "assistant", "content": "_"}]}  # fmt: skip
    conv = conversation("t", talk)
    for template in (NEEDS_USER, CHATML):
        renderer = Renderer(_tokenizer(model_dirs, "target"), template)
        text = renderer.render("t", conv.messages)
        data = text.encode()
        spans = content_spans(renderer, "t", conv, text)
        for (a, b), role, message in zip(spans, ("system", "user", "assistant"), conv.messages,
                                         strict=True):  # type: ignore[misc]  # fmt: skip
            assert data[a:b] == message["content"].encode()
            assert data[:a].endswith(f"<|im_start|>{role}\n".encode())


def test_only_the_last_piece_of_a_split_character_has_a_place() -> None:
    """Offsets give every piece of a character split over tokens the whole character's
    span; pairing such pieces by order would pair tokens that have read different bytes."""
    spans = np.array([[0, 1], [1, 4], [1, 4], [1, 4], [4, 5]])
    places = placed(spans, [(0, 5)], [(10, 15)])
    assert places.tolist() == [[10, 11], [-1, -1], [-1, -1], [11, 14], [14, 15]]


def test_a_sources_cross_entropy_counts_the_scored_contents_only(model_dirs: dict) -> None:
    """MinCE and AvgCE compare sources on the text the target's loss scores: with one
    tokenizer in two templates the source's counted predictions are of exactly the
    target's scored content tokens (not its headers, nor the user's turns), and its bytes
    are theirs."""
    from fusekit.strategies.fusellm.conversations import scored_messages

    tok = _tokenizer(model_dirs, "target")
    for talk in (TALKS[0], TALKS[2]):
        conv = conversation("t", talk)
        target, mask = target_example(Renderer(tok, CHATML), "t", conv, conv.default_loss_on, 512)
        chosen = scored_messages(target, mask)
        assert chosen == [m["role"] == "assistant" for m in conv.messages]
        read = source_example(Renderer(tok, GEMMA), "t", conv, 2048, chosen)
        counted = read.encoding.counted
        assert counted is not None and not counted[-1]
        source_tokens = read.encoding.ids[1:][counted[:-1]].tolist()
        spans = target.encoding.spans
        in_content = np.zeros(len(spans), dtype=bool)
        for span, on in zip(target.content, chosen, strict=True):
            if on:
                in_content |= (spans[:, 0] >= span[0]) & (spans[:, 1] <= span[1])
        target_tokens = target.encoding.ids[mask & in_content & (spans[:, 1] > spans[:, 0])]
        assert source_tokens == target_tokens.tolist()
        text = tok.decode(source_tokens)
        assert all(m["content"].strip() in text for m in conv.messages if m["role"] == "assistant")
        assert read.encoding.n_bytes == len(text.encode())


def test_stored_and_online_sources_count_the_same_cross_entropy(
    model_dirs: dict, talks: Path, tmp_path: Path
) -> None:
    """Offline (the top-k store) and online (the source model in the step) sum the same
    content-only cross-entropy, which is not the whole rendering's."""
    from fusekit.strategies.fusellm.extract import source_outputs

    built = {}
    for mode in ("offline", "online"):
        strategy = FuseLLMStrategy(_recipe(model_dirs, talks, mode=mode))
        built[mode] = strategy.build(strategy.prepare(tmp_path / mode), strategy.main_unit)
    batches = {m: b.collator([b.dataset[i] for i in range(len(b.dataset))])
               for m, b in built.items()}  # fmt: skip
    models = built["online"].trainer_kwargs["source_models"]
    for s, model in enumerate(models):
        src = batches["online"]["sources"][s]
        online = source_outputs(model, src["input_ids"], src["attention_mask"], 4,
                                counted=src["counted"])  # fmt: skip
        whole = source_outputs(model, src["input_ids"], src["attention_mask"], 4)
        stored = batches["offline"]["sources"][s]
        torch.testing.assert_close(online["nats"], stored["nats"])
        assert online["n_pred"].tolist() == stored["n_pred"].tolist()
        assert (online["n_pred"] < whole["n_pred"]).all()
        assert src["n_bytes"].tolist() == stored["n_bytes"].tolist()

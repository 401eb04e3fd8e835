"""Conversations are scored and prompted in the model's chat template, as training renders them."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from fusekit.data.chat import Renderer, conversation
from fusekit.errors import DataError
from fusekit.evaluation.harness import evaluate
from tests.evaluation.conftest import make_llama
from tests.training.test_chat import CHATML, SPECIALS

TALK = {
    "messages": [
        {"role": "user", "content": "capital of france:"},
        {"role": "assistant", "content": "paris"},
        {"role": "user", "content": "12 + 30 ="},
        {"role": "assistant", "content": "42"},
    ]
}


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer: Any) -> Any:
    """The evaluation tokenizer (it adds ``<s>`` in front of text) with ChatML's specials."""
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    return tok


@pytest.fixture(scope="module")
def chat_model(chat_tokenizer: Any) -> Any:
    return make_llama(len(chat_tokenizer), seed=3, context=128)


def _training_view(tokenizer: Any, model: Any) -> tuple[float, int, int]:
    """Nats, tokens and bytes of the assistant turns as training's mask scores them."""
    renderer = Renderer(tokenizer, CHATML)
    ids, labels = renderer.encode("x", conversation("x", TALK), "assistant", 4096)
    _, spans = renderer.spans("x", conversation("x", TALK), "assistant")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    nats = -sum(float(logp[i - 1, labels[i]]) for i in range(1, len(ids)) if labels[i] != -100)
    tokens = sum(1 for t in labels[1:] if t != -100)
    text = renderer.render("x", TALK["messages"])
    return nats, tokens, sum(len(text[s.start : s.stop].encode()) for s in spans)


def test_bits_per_byte_of_a_conversation_scores_the_turns_training_scores(
    chat_model: Any, chat_tokenizer: Any
) -> None:
    result = evaluate(
        chat_model, [TALK], "bpb", tokenizer=chat_tokenizer, chat_template=CHATML, progress=False
    )
    nats, tokens, n_bytes = _training_view(chat_tokenizer, chat_model)
    assert result["counts"]["tokens"] == tokens and result["counts"]["bytes"] == n_bytes
    assert result["details"]["nats"] == pytest.approx(nats, rel=1e-5)
    assert result["value"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)


def test_a_conversation_without_a_template_is_refused_naming_the_model(
    chat_model: Any, chat_tokenizer: Any
) -> None:
    with pytest.raises(DataError, match="has no chat template"):
        evaluate(chat_model, [TALK], "bpb", tokenizer=chat_tokenizer, progress=False)


def _memorise(model: Any, ids: list[int], steps: int = 80) -> Any:
    x = torch.tensor([ids])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_exact_match_prompts_in_the_template_and_stops_at_the_end_of_turn(
    chat_tokenizer: Any,
) -> None:
    """A model that learnt the rendered conversation answers the last turn; after its
    ``<|im_end|>`` it would go on with the next turn, so the answer is right only if
    generation stops there."""
    longer = {"messages": [*TALK["messages"], {"role": "user", "content": "the lazy"}]}
    text = Renderer(chat_tokenizer, CHATML).render("x", longer["messages"])
    model = _memorise(make_llama(len(chat_tokenizer), seed=4, context=128),
                      chat_tokenizer.encode(text, add_special_tokens=False))  # fmt: skip
    result = evaluate(
        model, [TALK], "exact_match", tokenizer=chat_tokenizer, chat_template=CHATML,
        progress=False, max_new_tokens=12,
    )  # fmt: skip
    assert result["value"] == 1.0, result
    assert math.isfinite(result["details"]["completion_bpb"])

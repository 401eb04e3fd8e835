"""Conversations rendered with a chat template: the loss masks equal the rendered spans."""

from __future__ import annotations

import pytest

from fusekit.data.chat import Renderer, chat_template, conversation
from fusekit.errors import DataError
from fusekit.tasks import task_tokenizer

#: SmolLM2-Instruct's template (ChatML, with a default system prompt).
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: Gemma's shape: BOS, the system prompt folded into the first user turn, the assistant
#: called "model", contents trimmed, roles that must alternate.
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] + '\n\n' %}{% set rest = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first if loop.first else '') "
    "+ message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
SPECIALS = ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"]

TALK = {
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What does len() return?"},
        {"role": "assistant", "content": "The number of items.\n"},
        {"role": "user", "content": "And of a dict?"},
        {"role": "assistant", "content": "Its number of keys."},
    ]
}


@pytest.fixture(scope="module")
def tokenizer():
    tok = task_tokenizer("code", kind="bpe")
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    return tok


def _scored_runs(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The text of each run of consecutive labelled positions."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(ids, labels, strict=True):
        if label != -100:
            assert label == token
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != -100
    return [tokenizer.decode(r, skip_special_tokens=False) for r in runs]


def _encode(tokenizer, template, record, loss_on, seq_len=4096):
    renderer = Renderer(tokenizer, template)
    return renderer.encode(
        "talk.jsonl: record 0", conversation("record 0", record), loss_on, seq_len
    )


def test_chatml_assistant_masks_are_the_assistant_turns_with_their_end_token(tokenizer) -> None:
    ids, labels = _encode(tokenizer, CHATML, TALK, "assistant")
    assert _scored_runs(tokenizer, ids, labels) == [
        "The number of items.\n<|im_end|>",
        "Its number of keys.<|im_end|>",
    ]
    # every token of the rendered conversation is there, in order
    assert tokenizer.decode(ids) == Renderer(tokenizer, CHATML).render("x", TALK["messages"])


def test_gemma_style_masks_follow_the_template_not_the_raw_content(tokenizer) -> None:
    ids, labels = _encode(tokenizer, GEMMA, TALK, "assistant")
    # the template trims the content and calls the assistant "model"
    assert _scored_runs(tokenizer, ids, labels) == [
        "The number of items.<end_of_turn>",
        "Its number of keys.<end_of_turn>",
    ]
    text = tokenizer.decode(ids)
    assert text.startswith(tokenizer.bos_token + "<start_of_turn>user\nAnswer briefly.\n\nWhat")


def test_a_conversation_without_a_system_prompt_gets_the_templates_default(tokenizer) -> None:
    record = {"messages": TALK["messages"][1:]}
    ids, labels = _encode(tokenizer, CHATML, record, "assistant")
    assert "You are a helpful assistant" in tokenizer.decode(ids)
    assert len(_scored_runs(tokenizer, ids, labels)) == 2


def test_completion_scores_the_completions_turns_or_the_last_assistant_turn(tokenizer) -> None:
    pair = {"prompt": TALK["messages"][:4], "completion": TALK["messages"][4:]}
    for template, end in ((CHATML, "<|im_end|>"), (GEMMA, "<end_of_turn>")):
        ids, labels = _encode(tokenizer, template, pair, "completion")
        assert _scored_runs(tokenizer, ids, labels) == [f"Its number of keys.{end}"]
        ids2, labels2 = _encode(tokenizer, template, TALK, "completion")
        assert (ids2, labels2) == (ids, labels)


def test_loss_on_all_scores_every_token(tokenizer) -> None:
    ids, labels = _encode(tokenizer, CHATML, TALK, "all")
    assert labels == ids


def test_a_long_conversation_is_cut_to_seq_len(tokenizer) -> None:
    ids, labels = _encode(tokenizer, CHATML, TALK, "assistant", seq_len=10)
    assert len(ids) == len(labels) == 10


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0]: unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": 3}]}, "'content' must be a string, not int"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"prompt": [{"role": "user", "content": "q"}], "completion": "a"},
         "'completion' must be a non-empty list of messages"),
        ({"messages": ["hello"]}, "messages[0] is not an object"),
    ],
)  # fmt: skip
def test_malformed_messages_are_one_line_naming_the_spot(record, message) -> None:
    with pytest.raises(DataError, match=r"^record 0: ") as err:
        conversation("record 0", record)
    assert message in str(err.value)


def test_a_conversation_with_nothing_to_train_on_is_refused(tokenizer) -> None:
    only_user = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(DataError, match="no assistant turn to train on under loss_on: assistant"):
        _encode(tokenizer, CHATML, only_user, "assistant")
    assert _encode(tokenizer, CHATML, only_user, "all")[0]


def test_a_template_that_fails_to_render_names_the_record(tokenizer) -> None:
    twice = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                          {"role": "assistant", "content": "c"}]}  # fmt: skip
    with pytest.raises(DataError, match=r"^talk.jsonl: record 0: the chat template cannot render"):
        _encode(tokenizer, GEMMA, twice, "assistant")


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer) -> None:
    # counts the messages up front: every prefix renders a different header
    counting = "{{ messages | length }}{% for m in messages %}|{{ m['content'] }}{% endfor %}"
    with pytest.raises(DataError, match=r"renders earlier turns differently.*loss_on: all"):
        _encode(tokenizer, counting, TALK, "assistant")


def test_a_model_without_a_template_is_told_how_to_give_one(tokenizer, tmp_path) -> None:
    assert tokenizer.chat_template is None
    with pytest.raises(
        DataError, match=r"models/base has no chat template; set train\.chat_template"
    ):
        chat_template(tokenizer, None, "models/base")
    file = tmp_path / "gemma.jinja"
    file.write_text(GEMMA)
    assert chat_template(tokenizer, str(file), "models/base") == GEMMA
    assert chat_template(tokenizer, CHATML, "models/base") == CHATML

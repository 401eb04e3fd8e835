"""``stdlib_chat``: offline conversations about the standard library, from its docstrings."""

from __future__ import annotations

import ast

import pytest

from fusekit.data.chat import conversation
from fusekit.errors import DataError
from fusekit.tasks import task_examples, task_tokenizer


def test_each_record_is_a_checked_conversation_with_two_assistant_turns() -> None:
    records = task_examples("stdlib_chat", n=200)
    assert len(records) == 200
    for i, record in enumerate(records):
        talk = conversation(f"record {i}", record)
        assert [m["role"] for m in talk.messages] == [
            "system", "user", "assistant", "user", "assistant"
        ]  # fmt: skip
        question, answer, call = (talk.messages[k]["content"] for k in (1, 2, 4))
        name = question.removeprefix("What does `").removesuffix("` do?")
        assert name != question and "." in name and len(answer) >= 24
        # the second answer is the name and parameters, which parse as Python's
        assert call.startswith(f"`{name}(") and call.endswith(")`")
        ast.parse(f"def f{call.strip('`')[len(name) :]}: pass")


def test_splits_share_no_question_and_are_the_same_on_every_call() -> None:
    train = task_examples("stdlib_chat")
    heldout = task_examples("stdlib_chat", split="heldout")
    assert len(train) > 1000 and len(heldout) > 100
    questions = {r["messages"][1]["content"] for r in train}
    assert not questions & {r["messages"][1]["content"] for r in heldout}
    assert task_examples("stdlib_chat", n=5) == train[:5]
    train[0]["messages"][2]["content"] = "edited"  # a caller's copy, not the task's
    assert task_examples("stdlib_chat", n=1)[0]["messages"][2]["content"] != "edited"


def test_text_options_and_tokenizers_are_refused() -> None:
    with pytest.raises(DataError, match="use n to size 'stdlib_chat'"):
        task_examples("stdlib_chat", max_chars=1000)
    with pytest.raises(DataError, match="holds conversations"):
        task_tokenizer("stdlib_chat")

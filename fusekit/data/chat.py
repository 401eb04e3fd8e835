"""Conversations: records of messages, rendered with a chat template, with exact loss masks.

Two conversational shapes are read, in TRL's names: language modelling
``{"messages": [{"role", "content"}, ...]}`` and prompt/completion whose prompt and
completion are lists of messages.  A chat model learnt its conversations in its own
template, so a conversation is trained in the template of the model that trains on
it (its tokenizer's, or ``train.chat_template``).

**Which tokens carry the loss** (``train.loss_on``): ``assistant`` (the default for
``messages``) — every assistant turn; ``completion`` (the default for
prompt/completion) — the completion's turns, or the last assistant turn of a
``messages`` record; ``all`` — every token of the rendered conversation.

**Masks are exact for any template**, not only templates with ``{% generation %}``
markers.  A scored turn ``k`` is found by rendering prefixes: the conversation up to
``k`` with the generation prompt ends where the turn's text starts, and the
conversation up to and including ``k`` ends after its end-of-turn text.  The span is
the turn's content and the template's end-of-turn token (``<|im_end|>``,
``<end_of_turn>``) — what the model generates before it stops — without the
whitespace a template writes after it.  That needs a template whose rendering of a
conversation starts with its rendering of every prefix; one that rewrites earlier
turns (dropping past reasoning, say) is refused with ``loss_on: all`` as the way out.
Each span is tokenised on its own, so the labelled tokens are exactly the span's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fusekit.data.records import refuse_surrogates
from fusekit.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
LossOn = Literal["all", "completion", "assistant"]
Message = dict[str, str]


@dataclass(frozen=True)
class Conversation:
    """The messages of one record and which of them the loss may score."""

    messages: list[Message]
    #: index of the first message of the completion (prompt/completion records), else None
    completion_start: int | None = None

    @property
    def default_loss_on(self) -> LossOn:
        """Where the loss goes unless ``train.loss_on`` says: the completion of a
        prompt/completion record, every assistant turn of a ``messages`` one."""
        return "assistant" if self.completion_start is None else "completion"

    def scored(self, loss_on: LossOn) -> list[int]:
        """Indices of the messages whose tokens carry the loss (empty for ``all``)."""
        assistant = [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]
        if loss_on == "assistant":
            return assistant
        if loss_on == "completion":
            if self.completion_start is not None:
                return list(range(self.completion_start, len(self.messages)))
            return assistant[-1:]
        return []


def is_conversational(record: Mapping[str, Any]) -> bool:
    """Whether a record holds messages (``messages``, or prompt/completion as message lists)."""
    return "messages" in record or isinstance(record.get("prompt"), list)


def _messages(where: str, name: str, value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {name!r} must be a non-empty list of messages")
    out: list[Message] = []
    for i, message in enumerate(value):
        at = f"{where}: {name}[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{at} is not an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{at}: unknown role {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            kind = type(content).__name__
            raise DataError(f"{at}: 'content' must be a string, not {kind}")
        refuse_surrogates(at, "content", content)
        out.append({"role": role, "content": content})
    return out


def conversation(where: str, record: Mapping[str, Any]) -> Conversation:
    """The ``Conversation`` of a conversational record, checked; ``DataError`` names the spot."""
    if "messages" in record:
        return Conversation(_messages(where, "messages", record["messages"]))
    prompt = _messages(where, "prompt", record.get("prompt"))
    completion = _messages(where, "completion", record.get("completion"))
    return Conversation([*prompt, *completion], completion_start=len(prompt))


def template_file(value: str | None) -> Path | None:
    """The file ``train.chat_template`` names, or None when it is the template itself."""
    if value is None or "{" in value or not Path(value).expanduser().is_file():
        return None
    return Path(value).expanduser()


def template_text(value: str | None) -> str | None:
    """``train.chat_template``: a file holding a Jinja template, or the template itself.

    A value with no ``{`` is no template (every template has a ``{{`` or ``{%``), so one
    that names no file is a path with a typo, or relative to another folder: refused,
    not rendered as a constant text that no content would ever be found in."""
    file = template_file(value)
    if file is not None:
        return file.read_text(encoding="utf-8")
    if value is not None and "{" not in value:
        raise DataError(
            f"chat template {value!r}: no such file; give a template file (relative to the "
            "folder the command runs in) or the template text itself"
        )
    return value


def chat_template(tokenizer: Any, override: str | None, model: str) -> str:
    """The template conversations are rendered in: the recipe's, else the tokenizer's."""
    template = template_text(override) or getattr(tokenizer, "chat_template", None)
    if not template:
        raise DataError(
            f"the data holds conversations but {model} has no chat template; set "
            "train.chat_template to a template file or string (e.g. the chat model's own)"
        )
    return str(template)


class Renderer:
    """Renders conversations in one template and finds the spans the loss scores."""

    def __init__(self, tokenizer: Any, template: str) -> None:
        self.tokenizer = tokenizer
        self.template = template

    def render(self, where: str, messages: Sequence[Message], prompt: bool = False) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=prompt,
                chat_template=self.template,
            )  # fmt: skip
        except Exception as exc:  # jinja's TemplateError, raise_exception() in templates
            raise DataError(f"{where}: the chat template cannot render it ({exc})") from None
        return str(text)

    def spans(self, where: str, conv: Conversation, loss_on: LossOn) -> tuple[str, list[range]]:
        """The rendered text and the character ranges the loss scores (all of it for ``all``)."""
        full = self.render(where, conv.messages)
        if loss_on == "all":
            return full, [range(0, len(full))]
        scored = conv.scored(loss_on)
        if not scored:
            raise DataError(
                f"{where}: the conversation has no assistant turn to train on under "
                f"loss_on: {loss_on}; add one, or set train.loss_on: all"
            )
        spans = []
        for k in scored:
            head = self.render(where, conv.messages[:k], prompt=True) if k else ""
            turn = self.render(where, conv.messages[: k + 1])
            if not (turn.startswith(head) and full.startswith(turn)):
                raise DataError(
                    f"{where}: the chat template renders earlier turns differently once later "
                    "ones follow, so the trained turns cannot be located; set train.loss_on: all"
                )
            end = len(turn.rstrip())
            if end > len(head):
                spans.append(range(len(head), end))
        return full, spans

    def encode(
        self, where: str, conv: Conversation, loss_on: LossOn, seq_len: int
    ) -> tuple[list[int], list[int]]:
        """Token ids and labels (-100 outside the scored spans), cut to ``seq_len``."""
        tokens = self.tokens(where, conv, loss_on, seq_len)
        return tokens.ids, tokens.labels

    def tokens(self, where: str, conv: Conversation, loss_on: LossOn, seq_len: int) -> Tokens:
        """``encode`` with the rendered text and, from a fast tokenizer, each token's
        character offsets in it (empty from a slow one, which has none)."""
        text, spans = self.spans(where, conv, loss_on)
        out = Tokens(text, [], [], [])
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        start = 0
        for piece, scored in _pieces(text, spans):
            if piece:
                enc = self.tokenizer(piece, add_special_tokens=False, return_offsets_mapping=fast)
                out.ids += enc["input_ids"]
                out.labels += enc["input_ids"] if scored else [-100] * len(enc["input_ids"])
                if fast:
                    out.offsets += [(start + a, start + b) for a, b in enc["offset_mapping"]]
            start += len(piece)
        del out.ids[seq_len:], out.labels[seq_len:], out.offsets[seq_len:]
        return out


@dataclass
class Tokens:
    """A rendered conversation's text, token ids, labels and character offsets."""

    text: str
    ids: list[int]
    labels: list[int]
    offsets: list[tuple[int, int]]


def _pieces(text: str, spans: list[range]) -> list[tuple[str, bool]]:
    """``text`` cut at the spans' edges: (piece, scored) in order."""
    out: list[tuple[str, bool]] = []
    cursor = 0
    for span in spans:
        out.append((text[cursor : span.start], False))
        out.append((text[span.start : span.stop], True))
        cursor = span.stop
    out.append((text[cursor:], False))
    return out

"""Conversations in evaluation: scored and prompted in the model's chat template.

A chat model's probabilities mean something only in the format it was tuned in, so a
conversational record (``{"messages"}``, or prompt/completion as lists of messages)
is rendered in the chat template of the model scored — its tokenizer's, or the one
given (``evaluate(..., chat_template=...)``, ``fusekit eval --chat-template``, a
recipe's ``train.chat_template``) — exactly as training renders it
(``fusekit.data.chat``):

- **bits per byte / perplexity**: every turn the training loss scores by default
  (the assistant turns of ``messages``, the completion of prompt/completion) is
  scored given everything the template renders before it.  The scored text is the
  turn's span as training masks it — its content and end-of-turn marker — and its
  UTF-8 bytes are what bits per byte divides by.
- **exact match**: the conversation up to its last scored turn, rendered with the
  generation prompt, is the prompt; that turn's content is the reference.
  Generation stops at the template's end-of-turn token (``<|im_end|>``,
  ``<end_of_turn>``) as well as at EOS, since a chat model ends its answer there.

The template writes the whole sequence, its BOS included (Gemma's writes ``<bos>``,
ChatML none), so no scoring prefix is put in front, as ``apply_chat_template`` with
``tokenize=True`` adds no special tokens; context and scored span are tokenised
separately, as training tokenises them, so the scored tokens are training's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fusekit.data.chat import Renderer, chat_template, conversation, is_conversational
from fusekit.data.records import as_pair, as_text_item
from fusekit.errors import DataError


@dataclass(frozen=True)
class Templated:
    """A span to score after a rendered context, the template having written all of it."""

    context: str
    target: str


@dataclass(frozen=True)
class TemplatedPrompt:
    """An exact-match item in a chat template: the prompt to generate from, the
    reference answer, and the text that ends the turn."""

    prompt: str
    reference: str
    end_of_turn: str
    span: Templated


class Conversations:
    """Turns the records of one evaluation set into scorable items, rendering any
    conversation in one template (resolved when the first conversation is met, so a
    set without conversations needs none)."""

    def __init__(self, tokenizer: Any, template: str | None, model: str) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.model = model
        self._renderer: Renderer | None = None

    def renderer(self) -> Renderer:
        if self._renderer is None:
            template = chat_template(self.tokenizer, self.template, self.model)
            self._renderer = Renderer(self.tokenizer, template)
        return self._renderer

    def _spans(self, where: str, record: Mapping[str, Any]) -> tuple[str, list[range], Any]:
        conv = conversation(where, record)
        text, spans = self.renderer().spans(where, conv, conv.default_loss_on)
        return text, spans, conv

    def text_items(self, where: str, record: Mapping[str, Any]) -> list[Any]:
        """Items for bits per byte: the record's text or pair, or one ``Templated`` per
        scored turn of a conversation."""
        if not is_conversational(record):
            return [as_text_item(where, record)]
        text, spans, _ = self._spans(where, record)
        return [Templated(text[: s.start], text[s.start : s.stop]) for s in spans]

    def exact_match_item(self, where: str, record: Mapping[str, Any]) -> Any:
        """A ``(prompt, completion)`` pair, or a ``TemplatedPrompt`` for a conversation."""
        if not is_conversational(record):
            return as_pair(where, record)
        text, spans, conv = self._spans(where, record)
        last = conv.scored("completion")[-1]
        message = conv.messages[last]
        if message["role"] != "assistant" or not spans:
            raise DataError(
                f"{where}: exact match needs the conversation to end with an assistant turn "
                "to compare with"
            )
        span = text[spans[-1].start : spans[-1].stop]
        if not span.startswith(message["content"]):
            raise DataError(
                f"{where}: the chat template changes the assistant's text (it starts "
                f"{span[:40]!r}), so an answer cannot be compared with it; score bpb instead"
            )
        end = span[len(message["content"]) :].strip()
        context = text[: spans[-1].start]
        return TemplatedPrompt(context, message["content"], end, Templated(context, span))

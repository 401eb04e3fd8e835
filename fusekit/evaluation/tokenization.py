"""Turning text into the exact token ids a metric scores.

The rule, shared by every metric so that their numbers agree:

* The text's own tokens are ``tokenizer.encode(text, add_special_tokens=False)``;
  special tokens a tokenizer would *append* (an EOS) are never scored — they
  are not part of the text and have no bytes.
* Before them comes the *scoring prefix*: the tokens the tokenizer itself puts
  in front of any text (a Llama-style BOS).  If it puts none, its
  ``bos_token`` is used, else its ``eos_token`` (GPT-2's ``<|endoftext|>``
  plays both roles).  The first real token is then predicted from that prefix,
  as in training.  A tokenizer with neither gets no prefix: the first token is
  context only — not scored, though its bytes still count in bits per byte.
* A ``(context, target)`` pair (a prompt and its completion) is tokenized as
  one string so the boundary tokenizes as in training; whitespace that ends the
  context moves to the target first (``"1 + 2 =" + " 3"``), because BPE
  vocabularies attach a space to the *following* word.  When the joint
  tokenization does not start with the context's own tokens, the two are
  tokenized separately and concatenated.
"""

from __future__ import annotations

from typing import Any

_PROBE = "a"


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """The text's tokens without any special tokens."""
    if not text:
        return []
    return list(tokenizer.encode(text, add_special_tokens=False))


def scoring_prefix(tokenizer: Any) -> list[int]:
    """The ids every scored sequence starts with (see the module docstring)."""
    plain = encode_plain(tokenizer, _PROBE)
    full = list(tokenizer.encode(_PROBE, add_special_tokens=True))
    prefix: list[int] = []
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            prefix = full[:start]
            break
    if not prefix:
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(tokenizer, name, None)
            if isinstance(value, int):
                prefix = [value]
                break
    return prefix


def move_trailing_space(context: str, target: str) -> tuple[str, str]:
    """Move whitespace that ends ``context`` to the start of ``target``."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + target


def encode_pair(tokenizer: Any, context: str, target: str) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``target`` following it (no prefix, no specials)."""
    if not context:
        return [], encode_plain(tokenizer, target)
    context_ids = encode_plain(tokenizer, context)
    whole = encode_plain(tokenizer, context + target)
    if whole[: len(context_ids)] == context_ids:
        return context_ids, whole[len(context_ids) :]
    return context_ids, encode_plain(tokenizer, target)


def scoring_sequence(
    tokenizer: Any, context: str, target: str, prefix: list[int] | None = None
) -> tuple[list[int], int, str]:
    """``(ids, first_target, scored_text)`` for scoring ``target`` after ``context``.

    ``ids`` is prefix + context + target tokens; targets are ``ids[first_target:]``.
    ``scored_text`` is the text those targets spell (the target, plus whitespace
    moved from the context): its UTF-8 bytes are what bits per byte divides by.
    With no prefix and no context, ``first_target`` is 1: the first token is context.
    Pass ``prefix`` (from ``scoring_prefix``) to skip recomputing it per record.
    """
    context, target = move_trailing_space(context, target)
    context_ids, target_ids = encode_pair(tokenizer, context, target)
    prefix = scoring_prefix(tokenizer) if prefix is None else prefix
    ids = prefix + context_ids + target_ids
    first_target = max(len(prefix) + len(context_ids), 1)
    return ids, first_target, target


def prompt_ids(tokenizer: Any, prompt: str, prefix: list[int] | None = None) -> list[int]:
    """What generation starts from: the scoring prefix and the prompt's tokens, as written."""
    prefix = scoring_prefix(tokenizer) if prefix is None else prefix
    return prefix + encode_plain(tokenizer, prompt)

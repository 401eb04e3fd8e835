"""Built-in data for the quick-start recipes and the tests: nothing is downloaded.

``task_examples(name, ...)`` returns records in fusekit's data format —
``{"prompt", "completion"}`` for the KV tasks (loss on the completion),
``{"text"}`` for the text domains, one record per document, and ``{"messages"}``
for the conversations of ``stdlib_chat`` — and
``task_tokenizer(name, ...)`` the tokenizer that goes with a task.

Importing this package is cheap: ``tokenizers`` and ``transformers`` are imported
only inside the functions that build tokenizers, and torch never.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fusekit.errors import DataError
from fusekit.tasks.chat import chat_examples
from fusekit.tasks.corpora import DOMAINS, SPLITS, domain_documents, mixed_documents
from fusekit.tasks.kv import (
    KEY_POOLS,
    KV_TASKS,
    KVConfig,
    key_split,
    kv_examples,
    kv_tokenizer,
    majority_baseline,
)
from fusekit.tasks.kv import _examples as _kv_stream
from fusekit.tasks.special import BOS, EOS, PAD, UNK
from fusekit.tasks.tokenizers import (
    TOKENIZER_KINDS,
    train_tokenizer,
    train_tokenizer_backend,
    wrap_backend,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

TASKS: dict[str, str] = {
    "kv_substitution": "k17 + k203 - k5 = → 7 + 3 - 5 (replace keys by their values)",
    "numeric_arithmetic": "7 + 3 - 5 = → 5 (no keys)",
    "kv_arithmetic": "k17 + k203 - k5 = → 5 (substitute, then compute)",
    "key_exposure": "k17 + k203 - k5 (keys in value-free expressions, for the anchor)",
    "kv_lookup": "k17 + k203 → 3 (the last key's value, predicted at its position; for the augment)",
    "kv_tag": "bavom + tesil → 7, read as tesil7 (kv_lookup with the value written right "
    "after the key: the next token at the key's position, for a real tokenizer)",
    "code": "Python standard-library source files",
    "english": "Python reference-manual prose (pydoc help topics)",
    "mixed": "code and english in equal shares, shuffled",
    "stdlib_chat": "conversations: what a standard-library function or class does and how "
    "it is called (from its docstring and signature)",
}
TEXT_TASKS: tuple[str, ...] = ("code", "english", "mixed")
CHAT_TASKS: tuple[str, ...] = ("stdlib_chat",)

#: KV tasks without ``n`` give this many examples.
DEFAULT_KV_EXAMPLES = 1000
#: Text-domain tokenizers: vocabulary size, family per domain, characters trained on.
DEFAULT_VOCAB_SIZE = 2000
DEFAULT_TOKENIZER_KIND: dict[str, str] = {"code": "bpe", "english": "metaspace", "mixed": "bpe"}
TOKENIZER_TRAIN_CHARS = 300_000

__all__ = [
    "BOS",
    "CHAT_TASKS",
    "DEFAULT_KV_EXAMPLES",
    "DEFAULT_TOKENIZER_KIND",
    "DEFAULT_VOCAB_SIZE",
    "DOMAINS",
    "EOS",
    "KEY_POOLS",
    "KV_TASKS",
    "PAD",
    "TASKS",
    "TEXT_TASKS",
    "TOKENIZER_KINDS",
    "UNK",
    "KVConfig",
    "domain_documents",
    "key_split",
    "kv_examples",
    "kv_tokenizer",
    "majority_baseline",
    "mixed_documents",
    "task_examples",
    "task_tokenizer",
    "train_tokenizer",
]


def _check_name(name: str) -> None:
    if name not in TASKS:
        raise DataError(f"unknown task {name!r}; valid names: {', '.join(TASKS)}")


def _check_n(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise DataError(f"n must be a non-negative integer or None, got {n!r}")


def task_examples(
    name: str,
    *,
    split: str = "train",
    keys: str = "all",
    n: int | None = None,
    seed: int = 0,
    max_chars: int | None = None,
    kv: KVConfig | Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Records of a built-in task.

    KV tasks: ``n`` examples (default ``DEFAULT_KV_EXAMPLES``) over the ``keys``
    pool (``all``/``held_in``/``held_out``) of the table ``kv`` (a ``KVConfig`` or
    a mapping of its fields). ``split="train"`` gives exactly
    ``kv_examples(name, n, cfg=kv, keys=keys, seed=seed)``; ``split="heldout"`` an
    independent stream for evaluation (fresh expressions; over held-in keys some
    may coincide with training expressions, over held-out keys none can).

    Text tasks (``code``, ``english``, ``mixed``): one ``{"text"}`` record per
    document of ``split``, at most ``max_chars`` characters in total, then at most
    ``n`` documents; ``seed`` only shuffles ``mixed``.

    ``stdlib_chat``: the first ``n`` conversations of ``split`` (``fusekit.tasks.chat``).
    """
    _check_name(name)
    _check_n(n)
    if split not in SPLITS:
        raise DataError(
            f"unknown split {split!r} for task {name!r}; choose one of: {', '.join(SPLITS)}"
        )
    if name in KV_TASKS:
        if max_chars is not None:
            raise DataError(f"max_chars applies to text tasks only; use n to size {name!r}")
        cfg = KVConfig.from_value(kv)
        count = DEFAULT_KV_EXAMPLES if n is None else n
        stream = f"{seed}" if split == "train" else f"heldout|{seed}"
        return _kv_stream(name, count, cfg=cfg, keys=keys, stream=stream)
    if keys != "all":
        raise DataError(f"keys applies to KV tasks only; drop keys={keys!r} for task {name!r}")
    if kv is not None:
        raise DataError(f"kv applies to KV tasks only; drop it for task {name!r}")
    if name in CHAT_TASKS:
        if max_chars is not None:
            raise DataError(f"max_chars applies to text tasks only; use n to size {name!r}")
        return list(chat_examples(split, n))
    if name == "mixed":
        docs = mixed_documents(DOMAINS, split, max_chars, seed)
    else:
        docs = domain_documents(name, split, max_chars=max_chars)
    if n is not None:
        docs = docs[:n]
    return [{"text": doc} for doc in docs]


@functools.lru_cache(maxsize=32)
def _text_tokenizer_json(name: str, kind: str, vocab_size: int) -> str:
    if name == "mixed":
        texts = mixed_documents(DOMAINS, "train", TOKENIZER_TRAIN_CHARS, 0)
    else:
        texts = domain_documents(name, "train", max_chars=TOKENIZER_TRAIN_CHARS)
    return train_tokenizer_backend(kind, texts, vocab_size).to_str()


def task_tokenizer(
    name: str,
    *,
    vocab_size: int | None = None,
    kind: str | None = None,
    kv: KVConfig | Mapping[str, Any] | None = None,
) -> PreTrainedTokenizerFast:
    """The tokenizer for a built-in task.

    KV tasks share the word-level ``kv_tokenizer(kv)``. Text tasks get a tokenizer
    trained on the first ``TOKENIZER_TRAIN_CHARS`` characters of their train split:
    ``kind`` defaults to ``bpe`` for ``code`` and ``mixed`` and ``metaspace`` for
    ``english`` (``DEFAULT_TOKENIZER_KIND``), ``vocab_size`` to
    ``DEFAULT_VOCAB_SIZE``. Trained once per process and settings; each call
    returns a fresh wrapper.
    """
    _check_name(name)
    if name in KV_TASKS:
        if vocab_size is not None or kind is not None:
            raise DataError(
                f"task {name!r} uses the fixed KV tokenizer; drop vocab_size/kind "
                "(size it through kv.num_keys)"
            )
        return kv_tokenizer(KVConfig.from_value(kv))
    if kv is not None:
        raise DataError(f"kv applies to KV tasks only; drop it for task {name!r}")
    if name in CHAT_TASKS:
        raise DataError(
            f"task {name!r} holds conversations, not a corpus to train a tokenizer on; "
            "use a text task (code, english, mixed)"
        )
    from tokenizers import Tokenizer

    kind = kind or DEFAULT_TOKENIZER_KIND[name]
    size = DEFAULT_VOCAB_SIZE if vocab_size is None else vocab_size
    if isinstance(size, bool) or not isinstance(size, int):
        raise DataError(f"vocab_size must be an integer, got {size!r}")
    if kind not in TOKENIZER_KINDS:
        raise DataError(
            f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(TOKENIZER_KINDS)}"
        )
    backend = Tokenizer.from_str(_text_tokenizer_json(name, kind, size))
    return wrap_backend(backend, kind)

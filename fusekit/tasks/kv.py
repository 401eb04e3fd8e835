"""CALM's key-value arithmetic tasks, sized for a CPU (Bansal et al. 2024, §4.1).

A fixed table maps *keys* (``k0`` … ``k299``, each a single vocabulary entry) to
small integers. Four tasks are built on it:

==================  ==========================  ==================
task                prompt                      completion
==================  ==========================  ==================
kv_substitution     ``k17 + k203 - k5 =``       `` 7 + 3 - 5``
numeric_arithmetic  ``7 + 3 - 5 =``             `` 5``
kv_arithmetic       ``k17 + k203 - k5 =``       `` 5``
key_exposure        ``""`` (empty)              ``k17 + k203 - k5``
kv_lookup           ``k17 + k203``              `` 3``
kv_tag              ``k17 + k203``              `` 3`` (text: ``3``)
==================  ==========================  ==================

The augmenting model learns substitution (it knows the table), the anchor learns
numeric arithmetic (it never sees a value of a key), and the composition is
trained on KV arithmetic over the *held-in* 20 % of the keys and evaluated on the
held-out rest.

**Text form.** Every token is separated from the next by exactly one space:
keys, the operators ``+`` ``-`` ``=``, and every *digit* of a number (numbers
are written digit by digit, most significant first; a negative result carries a
separate ``-`` token). So with ``value_max=99`` a substitution reads
``k1 + k2 = 1 0 + 2 2`` and a result of −12 reads ``- 1 2``. The completion is
the text after the prompt and starts with a space, so ``prompt + completion``
is the whole example; with the KV tokenizer the split falls on a token boundary
(the tokenizer ignores whitespace), and an exact-match check compares
``completion.strip()`` with the decoded, stripped generation (the tokenizer's
``decode`` joins tokens with single spaces, i.e. yields exactly this form).
An example ends where the answer ends: training code appends EOS after the
completion and generation stops at EOS.

**The text style, for real tokenizers.** ``style="text"`` writes the same tasks
the way a pretrained model reads them: keys are made-up lowercase words
(``"bavom"``; seeded, distinct, no digits inside, so a key never looks like a
number to a tokenizer that splits digits), numbers are written plainly
(``"12"``, ``"-4"``), and every prompt is preceded by ``shots`` fixed numeric
demonstrations, one per line (``"3 + 4 = 7\n"``), so a base model that knows
arithmetic only few-shot can be scored on it: the anchor's own skill is then
its few-shot skill, and the composition is scored on the same prompts. The
``kv`` word-level tokenizer reads the token style only.

**Operands.** 2–3 operands (``min_operands``/``max_operands``); the first has no
sign, each further one is preceded by ``+`` or ``-`` with equal probability.
Operand keys are drawn uniformly with replacement from the chosen key pool;
numeric arithmetic draws values uniformly from ``0..value_max``.

**key_exposure — why.** In the paper (§4.1) the keys are English strings of
2–6 characters sampled from the vocabulary of PaLM2-XXS (the augmenting
model's base), and the anchor, a pre-trained PaLM2-XS, "has no knowledge of
the KV pairs". Here the anchor is trained from scratch on numbers alone: it
has never seen a key token at all, so the keys' embedding rows stay at their
random initialisation and the composition's queries become
key-specific: it memorises held-in keys instead of learning to look the value
up (observed: held-out accuracy peaks at ≈ 36 % and falls). ``key_exposure``
shows the anchor every key in the same expression shapes, *without values and
without* ``=``: the embeddings of all keys (held-out ones too) are trained to
act as interchangeable operands, nothing about any value can be learnt, and the
anchor's behaviour after ``=`` is still defined by numeric arithmetic alone.
The whole example is the completion (empty prompt), so the loss covers every
token. Mix it with ``numeric_arithmetic`` when pre-training the anchor.

**kv_lookup — why.** CALM's augment must hold a key's value *at the key's own
position*: with a token-aligned (diagonal) cross mask that is the only place the
anchor reads it. Substitution alone does not force this: a model may keep just
the key's identity there and look the value up later, at the output position,
and which of the two a training run learns varies from seed to seed. A lookup
example is an expression cut right after a key, answered by that key's value,
so the value has to be predicted *from the key's position* in exactly the
contexts (first operand, after ``+``, after ``-``) where KV-arithmetic prompts
put keys. Mixed into the augment's training, it fixes where the value lives; the
augment still never sees arithmetic.

**kv_tag — why.** With a real tokenizer a text-style lookup's answer ``" 7"`` is two
tokens, a space and the digit, so the key's own position predicts the space and the
value is only needed one token later: measured on SmolLM2-135M trained on lookups
and substitutions, whose lookups answer every key right, the key's last token names
the value (its own output head, restricted to digits) for about 75 % of keys.
``kv_tag`` is the lookup with the value written right after
the key (``"bavom + tesil"`` → ``"7"``, read together as ``tesil7``): a tokenizer
that splits digits from letters keeps the key's tokens as they are in any prompt
and puts the digit next, so the value is the very next token at the key's
position.  In the token style it is ``kv_lookup`` (the KV tokenizer ignores spaces).

**Determinism.** Values and the key split depend only on ``KVConfig`` (its
``seed``); the examples depend on the config, the task, the key pool and the
``seed`` argument, through string-seeded ``random.Random`` (unaffected by
``PYTHONHASHSEED``).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from fusekit.errors import DataError
from fusekit.tasks.special import BOS, EOS, PAD, UNK

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

KV_TASKS: tuple[str, ...] = (
    "kv_substitution",
    "numeric_arithmetic",
    "kv_arithmetic",
    "key_exposure",
    "kv_lookup",
    "kv_tag",
)
KEY_POOLS: tuple[str, ...] = ("all", "held_in", "held_out")
OPERATORS: tuple[str, ...] = ("+", "-")
KV_STYLES: tuple[str, ...] = ("tokens", "text")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


@dataclass(frozen=True)
class KVConfig:
    """The key table and expression shape shared by every KV task and its tokenizer.

    ``value_max=9`` is the quick-start tier (one digit per value); ``99`` is the
    harder tier. ``held_in_fraction`` of the keys (rounded) form the held-in pool.
    ``style`` and ``shots``: see "The text style" in the module doc.
    ``balanced_split`` draws the held-in keys value by value (see ``key_split``).
    """

    num_keys: int = 300
    value_max: int = 9
    min_operands: int = 2
    max_operands: int = 3
    held_in_fraction: float = 0.2
    seed: int = 0
    # Out of the repr, which seeds the example streams: the token style's examples
    # stay what they were before the text style existed.
    style: str = field(default="tokens", repr=False)
    shots: int = field(default=0, repr=False)
    # Out of the repr too: the table, the demonstrations and every stream over all keys
    # stay what they were, so a model trained on the whole table serves both splits.
    balanced_split: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.style not in KV_STYLES:
            raise DataError(f"kv.style must be one of {', '.join(KV_STYLES)}, got {self.style!r}")
        if not isinstance(self.balanced_split, bool):
            raise DataError(f"kv.balanced_split must be true or false, got {self.balanced_split!r}")
        for f in fields(self):
            if f.name in ("style", "balanced_split"):
                continue
            value = getattr(self, f.name)
            expected = float if f.name == "held_in_fraction" else int
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(f"kv.{f.name} must be a number, got {value!r}")
            if expected is int and not isinstance(value, int):
                raise DataError(f"kv.{f.name} must be an integer, got {value!r}")
        if self.num_keys < 2:
            raise DataError(f"kv.num_keys must be at least 2, got {self.num_keys}")
        if self.value_max < 1:
            raise DataError(f"kv.value_max must be at least 1, got {self.value_max}")
        if not 1 <= self.min_operands <= self.max_operands:
            raise DataError(
                f"kv operands need 1 <= min_operands <= max_operands, "
                f"got {self.min_operands} and {self.max_operands}"
            )
        held_in = round(self.num_keys * self.held_in_fraction)
        if not 0 < held_in < self.num_keys:
            raise DataError(
                f"kv.held_in_fraction={self.held_in_fraction} leaves no held-in or no held-out "
                f"keys among {self.num_keys}; use a fraction strictly between 0 and 1"
            )
        if self.shots < 0:
            raise DataError(f"kv.shots must be at least 0, got {self.shots}")
        if self.shots and self.style != "text":
            raise DataError(
                "kv.shots needs kv.style: text (the token style has no line breaks to "
                "separate demonstrations)"
            )
        if self.style == "text" and self.num_keys > _WORD_KEYS:
            raise DataError(
                f"kv.num_keys={self.num_keys} exceeds the {_WORD_KEYS} distinct word keys "
                "of the text style; use fewer keys"
            )

    @classmethod
    def from_value(cls, value: KVConfig | Mapping[str, Any] | None) -> KVConfig:
        """Accept a config, a mapping of its fields (as in a recipe), or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, KVConfig):
            return value
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise DataError(
                    f"unknown kv field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
                )
            return cls(**value)
        raise DataError(f"kv must be a KVConfig or a mapping of its fields, got {value!r}")


_WORD_KEYS = (len(_CONSONANTS) * len(_VOWELS)) ** 2 * len(_CONSONANTS)


@functools.lru_cache(maxsize=64)
def key_names(cfg: KVConfig) -> tuple[str, ...]:
    """All keys in index order: ``k0`` … ``k{num_keys-1}``, or in the text style
    ``num_keys`` distinct consonant-vowel words of five letters (``"bavom"``),
    drawn by ``cfg.seed``."""
    if cfg.style == "tokens":
        return tuple(f"k{i}" for i in range(cfg.num_keys))
    rng = random.Random(f"kv-words|{cfg.seed}")
    words: dict[str, None] = {}
    while len(words) < cfg.num_keys:
        letters = [rng.choice(_VOWELS if i % 2 else _CONSONANTS) for i in range(5)]
        words.setdefault("".join(letters))
    return tuple(words)


@functools.lru_cache(maxsize=64)
def key_values(cfg: KVConfig) -> dict[str, int]:
    """The fixed key → value table (uniform in ``0..value_max``, set by ``cfg.seed``)."""
    rng = random.Random(f"kv-values|{cfg.seed}|{cfg.value_max}")
    return {key: rng.randint(0, cfg.value_max) for key in key_names(cfg)}


@functools.lru_cache(maxsize=64)
def key_split(cfg: KVConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(held_in, held_out): a seeded, disjoint partition of the keys, each in index order.

    A plain split draws the held-in keys uniformly. With few held-in keys that can
    leave values out: 20 of 100 keys over the values 0–9 may hold no 7 and no 8, and a
    composition trained on them has never read those values from the augment, so
    held-out keys with them test extrapolation, not lookup. ``balanced_split`` draws
    the held-in keys value by value, in rounds (one key of each value per round, the
    values in a seeded order), so every value is held in as evenly as the table allows.
    """
    keys = key_names(cfg)
    n_in = round(cfg.num_keys * cfg.held_in_fraction)
    if not cfg.balanced_split:
        chosen = set(random.Random(f"kv-split|{cfg.seed}").sample(range(cfg.num_keys), n_in))
    else:
        rng = random.Random(f"kv-split-balanced|{cfg.seed}")
        table = key_values(cfg)
        by_value: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            by_value.setdefault(table[key], []).append(i)
        for members in by_value.values():
            rng.shuffle(members)
        order = sorted(by_value)
        rng.shuffle(order)
        picks = [by_value[v][r] for r in range(cfg.num_keys) for v in order if r < len(by_value[v])]
        chosen = set(picks[:n_in])
    held_in = tuple(k for i, k in enumerate(keys) if i in chosen)
    held_out = tuple(k for i, k in enumerate(keys) if i not in chosen)
    return held_in, held_out


def number_text(value: int, style: str = "tokens") -> str:
    """A signed integer written digit by digit: ``-12`` → ``"- 1 2"``, ``7`` → ``"7"``;
    in the text style plainly: ``-12`` → ``"-12"``."""
    if style == "text":
        return str(value)
    digits = " ".join(str(abs(value)))
    return f"- {digits}" if value < 0 else digits


def _expression(terms: Iterable[str], signs: Iterable[str]) -> str:
    parts: list[str] = []
    for i, (term, sign) in enumerate(zip(terms, signs, strict=True)):
        parts.append(term if i == 0 else f"{sign} {term}")
    return " ".join(parts)


def _signed_sum(values: list[int], signs: list[str]) -> int:
    total = values[0]
    for value, sign in zip(values[1:], signs[1:], strict=True):
        total = total + value if sign == "+" else total - value
    return total


@functools.lru_cache(maxsize=64)
def demonstrations(cfg: KVConfig) -> str:
    """The ``cfg.shots`` numeric examples every text-style prompt starts with, one per
    line; drawn by ``cfg.seed`` from their own stream, so they never change with ``n``."""
    rng = random.Random(f"kv-shots|{cfg}|{cfg.shots}")
    lines = []
    for _ in range(cfg.shots):
        count = rng.randint(cfg.min_operands, cfg.max_operands)
        signs = [""] + [rng.choice(OPERATORS) for _ in range(count - 1)]
        values = [rng.randint(0, cfg.value_max) for _ in range(count)]
        expression = _expression((str(v) for v in values), signs)
        lines.append(f"{expression} = {_signed_sum(values, signs)}\n")
    return "".join(lines)


def _pool(cfg: KVConfig, keys: str) -> tuple[str, ...]:
    if keys == "all":
        return key_names(cfg)
    if keys == "held_in":
        return key_split(cfg)[0]
    if keys == "held_out":
        return key_split(cfg)[1]
    raise DataError(f"unknown key pool {keys!r}; choose one of: {', '.join(KEY_POOLS)}")


def kv_examples(
    task: str,
    n: int,
    *,
    cfg: KVConfig | None = None,
    keys: str = "all",
    seed: int = 0,
) -> list[dict[str, str]]:
    """``n`` examples ``{"prompt", "completion"}`` of one KV task (see the module doc).

    ``keys`` chooses the pool operands are drawn from; ``numeric_arithmetic`` has no
    keys and accepts only ``"all"``. Different ``seed`` values give independent
    streams; the same arguments always give the same list.
    """
    return _examples(task, n, cfg=cfg or KVConfig(), keys=keys, stream=str(seed))


def _examples(task: str, n: int, *, cfg: KVConfig, keys: str, stream: str) -> list[dict[str, str]]:
    """``kv_examples`` with a free-form stream name (evaluation streams differ from seeds)."""
    if task not in KV_TASKS:
        raise DataError(f"unknown KV task {task!r}; choose one of: {', '.join(KV_TASKS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"n must be a non-negative integer, got {n!r}")
    if task == "numeric_arithmetic" and keys != "all":
        raise DataError(
            f"numeric_arithmetic has no keys; drop keys={keys!r} (or use kv_arithmetic)"
        )
    pool = _pool(cfg, keys)
    table = key_values(cfg)
    text = f"|{cfg.style}|{cfg.shots}" if cfg.style != "tokens" else ""
    rng = random.Random(f"kv-examples|{task}|{keys}|{stream}|{cfg}{text}")
    shots = demonstrations(cfg)

    def num(value: int) -> str:
        return number_text(value, cfg.style)

    out: list[dict[str, str]] = []
    for _ in range(n):
        # a key may be the first operand
        low = 1 if task in ("kv_lookup", "kv_tag") else cfg.min_operands
        count = rng.randint(low, cfg.max_operands)
        signs = [""] + [rng.choice(OPERATORS) for _ in range(count - 1)]
        if task == "numeric_arithmetic":
            values = [rng.randint(0, cfg.value_max) for _ in range(count)]
            prompt = _expression((num(v) for v in values), signs) + " ="
            answer = num(_signed_sum(values, signs))
            out.append({"prompt": shots + prompt, "completion": " " + answer})
            continue
        operands = [rng.choice(pool) for _ in range(count)]
        keyed = _expression(operands, signs)
        values = [table[k] for k in operands]
        if task == "key_exposure":
            out.append({"prompt": shots, "completion": keyed})
        elif task in ("kv_lookup", "kv_tag"):
            space = "" if task == "kv_tag" and cfg.style == "text" else " "
            out.append({"prompt": shots + keyed, "completion": space + num(values[-1])})
        elif task == "kv_substitution":
            substituted = _expression((num(v) for v in values), signs)
            out.append({"prompt": shots + keyed + " =", "completion": " " + substituted})
        else:  # kv_arithmetic
            answer = num(_signed_sum(values, signs))
            out.append({"prompt": shots + keyed + " =", "completion": " " + answer})
    return out


def majority_baseline(examples: Iterable[Mapping[str, str]]) -> float:
    """Share of the most common completion: the accuracy of always answering it (chance level)."""
    counts = Counter(ex["completion"].strip() for ex in examples)
    if not counts:
        raise DataError("majority_baseline needs at least one example, got none")
    return counts.most_common(1)[0][1] / sum(counts.values())


def kv_vocabulary(cfg: KVConfig) -> list[str]:
    """Token strings by id: specials, ``=`` ``+`` ``-``, digits ``0``–``9``, then the keys."""
    return [PAD, BOS, EOS, UNK, "=", *OPERATORS, *(str(d) for d in range(10)), *key_names(cfg)]


@functools.lru_cache(maxsize=16)
def _kv_tokenizer_json(cfg: KVConfig) -> str:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(kv_vocabulary(cfg))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # Whitespace is only a separator; then every word is one token, every digit and
    # every other symbol its own token — so "-12" and "- 1 2" encode the same way
    # while a key such as "k17" stays whole.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(
                Regex(r"[A-Za-z_][A-Za-z_0-9]*|[0-9]|[^A-Za-z_0-9\s]"), behavior="isolated"
            ),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.add_special_tokens([PAD, BOS, EOS, UNK])
    return tok.to_str()


def kv_tokenizer(cfg: KVConfig | None = None) -> PreTrainedTokenizerFast:
    """The shared word-level tokenizer: one token per key, operator and digit.

    Ids: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, ``=`` 4, ``+`` 5,
    ``-`` 6, ``0``–``9`` 7–16, ``k0`` … from 17 (vocabulary size ``17 + num_keys``).
    Every encoding starts with ``<bos>``; EOS is not added (append it yourself).
    ``decode`` joins tokens with single spaces. A fresh wrapper is returned on
    every call, so callers may change e.g. ``padding_side`` freely.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    cfg = cfg or KVConfig()
    if cfg.style != "tokens":
        raise DataError(
            "the kv tokenizer reads kv.style: tokens only; text-style KV data is for a "
            "pretrained model's own tokenizer"
        )
    backend = Tokenizer.from_str(_kv_tokenizer_json(cfg))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )

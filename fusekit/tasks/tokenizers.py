"""Tokenizers trained in-process, so that cross-tokenizer code meets real differences.

Two families, the ones FuseLLM and cross-tokenizer CALM must bridge in practice:

- ``"bpe"`` — GPT-2 style byte-level BPE: the ``ByteLevel`` pre-tokenizer (GPT-2's
  split regex, spaces shown as ``Ġ``, newlines as ``Ċ``) and decoder. Every byte
  is in the base alphabet, so any text encodes without an unknown token.
  Specials: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2 (no ``<unk>``: it can never
  occur), then the 256 byte symbols, then merges.
- ``"metaspace"`` — SentencePiece style BPE: spaces become ``▁`` and every space
  starts a new piece (the ``Metaspace`` pre-tokenizer with ``split=True``, so an
  indentation of four spaces is four ``▁`` tokens), rare characters fall back to
  the 256 byte tokens ``<0x00>`` … ``<0xFF>`` (``byte_fallback``), and — as in
  Llama's vocabulary — newlines are *only* ever the byte token ``<0x0A>``.
  Specials: ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3, bytes 4–259.
  By default no dummy prefix is added (Gemma's choice), which makes both the
  round trip and the character offsets exact. ``dummy_prefix=True`` gives the
  Llama-2 behaviour instead: ``▁`` is prepended to the text, so the first word
  is ``▁def`` (its offsets cover only ``def``), and the decoder drops one
  leading space — hence a text that *starts* with a space does not round-trip
  (the known SentencePiece exception).

Both add ``<bos>`` in front of every encoding (a post-processor; ``<eos>`` is
left to the caller), have fast-tokenizer offsets (``return_offsets_mapping``) in
characters of the original text, and decode what they encode exactly, including
indentation, tabs, newlines and non-ASCII text (with the exception above). A
byte-level token that holds part of a multi-byte character reports the whole
character's span, as all HF fast tokenizers do.

Training is deterministic at the sizes fusekit's tasks use: the same texts and
settings give the same vocabulary and merges (tested). At benchmark scale (32k
merges on ~8M characters) the Metaspace kind was seen to differ by a merge or so
between two trainings, most likely ties between equally frequent pairs resolved in
whatever order the trainer's parallel workers produce; the byte-level kind was stable.
From-scratch models cache their tokenizer with their weights, so this never mixes
two vocabularies in one run. Different ``vocab_size`` values, or the two kinds, give
tokenizers that genuinely differ — enough for a "three sources, three
tokenizers" FuseLLM setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fusekit.errors import DataError
from fusekit.tasks.special import BOS, BYTE_TOKENS, EOS, PAD, UNK

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

TOKENIZER_KINDS: tuple[str, ...] = ("bpe", "metaspace")
SPACE_MARKERS: dict[str, str] = {"bpe": "Ġ", "metaspace": "▁"}

#: Characters seen in training beyond this many (the rarest) are left to byte fallback,
#: like SentencePiece's ``character_coverage``; it keeps odd Unicode out of the vocabulary.
_METASPACE_ALPHABET = 150
#: Extra merges trained so that dropping newline pieces still leaves ``vocab_size`` entries.
_NEWLINE_SLACK = 16
#: Smallest vocabularies that still leave room for some merges.
_MIN_VOCAB = {"bpe": 3 + 256 + 32, "metaspace": 4 + 256 + _METASPACE_ALPHABET + 32}


def _bpe_backend(texts: list[str], vocab_size: int) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _without_newline_pieces(model: dict, vocab_size: int) -> dict:
    """Drop every learned piece containing ``\\n`` and cut the vocabulary to ``vocab_size``.

    A newline then has no piece of its own and is encoded by byte fallback as
    ``<0x0A>``, as in Llama's vocabulary. Removing pieces keeps the BPE consistent:
    a merge is dropped when its result or a part is dropped, and since a merge's
    parts always have smaller ids than its result, cutting the highest ids leaves a
    valid prefix of the merge list.
    """
    protected = {PAD, BOS, EOS, UNK, *BYTE_TOKENS}
    ordered = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    kept = [tok for tok, _ in ordered if tok in protected or "\n" not in tok][:vocab_size]
    keep = set(kept)
    model["vocab"] = {tok: i for i, tok in enumerate(kept)}
    model["merges"] = [
        [a, b] for a, b in model["merges"] if a in keep and b in keep and a + b in keep
    ]
    return model


def _metaspace_backend(texts: list[str], vocab_size: int, dummy_prefix: bool) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True))
    # Newlines are isolated first so that no piece spans a line break; they are then
    # removed from the vocabulary (byte fallback takes over, see above).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(
                replacement="▁", prepend_scheme="first" if dummy_prefix else "never", split=True
            ),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + _NEWLINE_SLACK,
        special_tokens=[PAD, BOS, EOS, UNK, *BYTE_TOKENS],
        limit_alphabet=_METASPACE_ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)

    state = json.loads(tok.to_str())
    # The byte tokens were passed as "special" only to reserve ids 4–259; they are
    # ordinary vocabulary entries (decoded, never skipped, never matched in raw text).
    state["added_tokens"] = [t for t in state["added_tokens"] if t["content"] not in BYTE_TOKENS]
    state["model"] = _without_newline_pieces(state["model"], vocab_size)
    state["model"]["byte_fallback"] = True
    state["model"]["fuse_unk"] = True
    tok = Tokenizer.from_str(json.dumps(state))
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def train_tokenizer_backend(
    kind: str, texts: Iterable[str], vocab_size: int, *, dummy_prefix: bool = False
) -> Tokenizer:
    """The raw ``tokenizers.Tokenizer`` (see ``train_tokenizer``), with BOS post-processing."""
    from tokenizers import processors

    if kind not in TOKENIZER_KINDS:
        raise DataError(
            f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(TOKENIZER_KINDS)}"
        )
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise DataError(f"vocab_size must be an integer, got {vocab_size!r}")
    if vocab_size < _MIN_VOCAB[kind]:
        raise DataError(
            f"vocab_size {vocab_size} is too small for a {kind} tokenizer; "
            f"use at least {_MIN_VOCAB[kind]}"
        )
    if dummy_prefix and kind != "metaspace":
        raise DataError("dummy_prefix applies to metaspace tokenizers only; drop it for bpe")
    corpus = [t for t in texts if t]
    if not corpus:
        raise DataError("cannot train a tokenizer on no text: texts is empty")
    if kind == "bpe":
        tok = _bpe_backend(corpus, vocab_size)
    else:
        tok = _metaspace_backend(corpus, vocab_size, dummy_prefix)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)]
    )
    return tok


def wrap_backend(backend: Tokenizer, kind: str) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer around ``backend`` with the special tokens named."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK if kind == "metaspace" else None,
    )


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int,
    *,
    seed: int = 0,
    dummy_prefix: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a ``"bpe"`` or ``"metaspace"`` tokenizer of ``vocab_size`` entries on ``texts``.

    ``vocab_size`` counts everything (specials and byte tokens included); a corpus
    too small to support that many merges yields fewer. ``seed`` is accepted for
    symmetry with the other builders and has no effect: BPE training is
    deterministic. ``save_pretrained`` writes a folder that
    ``AutoTokenizer.from_pretrained`` reloads unchanged.
    """
    del seed  # deterministic training; see docstring
    return wrap_backend(
        train_tokenizer_backend(kind, texts, vocab_size, dummy_prefix=dummy_prefix), kind
    )

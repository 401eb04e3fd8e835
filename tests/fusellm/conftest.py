"""Fixtures for FuseLLM: three tokenizer families trained in-process, tiny Llamas.

* ``bpe`` — byte-level BPE (``Ġ`` for spaces, ``Ċ`` for newlines), GPT-2 style;
* ``sp`` — SentencePiece-style BPE (``▁`` for spaces, dummy prefix) with byte
  fallback (``<0x0A>`` for a newline);
* ``wp`` — WordPiece (``##`` continuations; it drops whitespace, so its byte
  spans come from the tokenizer's offsets).

All put BOS in front of every sequence and share ids 0..3 = pad, bos, eos, unk.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

CODE = [
    "def add(a, b):\n    return a + b\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
    "    def push(self, x):\n        self.items.append(x)\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i, 'even')\n",
    "import os\nimport sys\n\ndef main(argv):\n    return len(argv) > 1\n",
]
ENGLISH = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Fusion of language models keeps what each parent model knows, "
    "and the child learns from both of them at once.",
    "A café in Zürich serves coffee — naïve readers may find the accents odd.",
    "Numbers such as 12, 345 and 6789 appear in text, and so do dates like 2024-01-19.",
]
CORPUS = (CODE + ENGLISH) * 6
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


@functools.lru_cache(maxsize=8)
def _tokenizer_json(kind: str, vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif kind == "sp":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIALS + [f"<0x{b:02X}>" for b in range(256)],
        )
    elif kind == "wp":
        tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
    else:
        raise ValueError(kind)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok.to_str()


def make_tokenizer(kind: str, vocab_size: int) -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if kind == "sp":
        # Byte-fallback tokens are ordinary (non-special) vocabulary entries, as in Llama.
        import json

        spec = json.loads(_tokenizer_json(kind, vocab_size))
        spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIALS]
        backend = Tokenizer.from_str(json.dumps(spec))
    else:
        backend = Tokenizer.from_str(_tokenizer_json(kind, vocab_size))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


@pytest.fixture(scope="session")
def bpe() -> Any:
    return make_tokenizer("bpe", 400)


@pytest.fixture(scope="session")
def sp() -> Any:
    return make_tokenizer("sp", 600)


@pytest.fixture(scope="session")
def wp() -> Any:
    return make_tokenizer("wp", 300)


def tiny_llama(vocab_size: int, seed: int = 0, extra_vocab: int = 0) -> Any:
    """A 4-layer d=64 Llama; ``extra_vocab`` pads the embedding past the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size + extra_vocab,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def save_model(tokenizer: Any, folder: Path, seed: int = 0, extra_vocab: int = 0) -> Path:
    model = tiny_llama(len(tokenizer), seed, extra_vocab)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, bpe: Any, sp: Any, wp: Any) -> dict:
    root = tmp_path_factory.mktemp("fusellm_models")
    return {
        "target": save_model(bpe, root / "target", seed=0, extra_vocab=7),
        "bpe": save_model(bpe, root / "bpe", seed=1),
        "sp": save_model(sp, root / "sp", seed=2),
        "wp": save_model(wp, root / "wp", seed=3),
    }


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write vocabulary maps or logit stores into the user's home."""
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path / "fusekit_cache"))

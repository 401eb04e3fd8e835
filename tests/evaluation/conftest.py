"""Tiny models and tokenizers for the evaluation tests, built once per session.

Three tokenizers cover the three scoring-prefix cases: one that adds a BOS
itself (Llama style), one with only an end-of-text token (GPT-2 style, which
is then used as the prefix), and one with no special tokens at all (the first
token is context only).  Models are 2-layer Llamas small enough to train for
a few hundred steps in a couple of seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

CORPUS = [
    "the quick brown fox jumps over the lazy dog.",
    "héllo wörld, naïve café — 中文 and 😀 are several bytes each.",
    "numbers: 0 1 2 3 4 5 6 7 8 9, 12 + 30 = 42 and 7 - 5 = 2.",
    "paris is the capital of france. rome is the capital of italy.",
    "def add(a, b):\n    return a + b\n",
]

# prompt -> completion pairs a trained model learns to answer (then EOS)
FACTS = [
    ("capital of france:", " paris"),
    ("capital of italy:", " rome"),
    ("12 + 30 =", " 42"),
    ("the quick brown", " fox jumps"),
    ("the lazy", " dog."),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """Tiny models run fastest on one thread; more threads only contend on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_backend(specials: Sequence[str], post_bos: str | None) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    if post_bos is not None:
        bos_id = tok.token_to_id(post_bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{post_bos} $A",
            pair=f"{post_bos} $A {post_bos} $B",
            special_tokens=[(post_bos, bos_id)],
        )
    return tok


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """Adds ``<s>`` in front of every text itself; pad 0, bos 1, eos 2."""
    from transformers import PreTrainedTokenizerFast

    backend = _train_backend(["<pad>", "<s>", "</s>"], post_bos="<s>")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="session")
def eot_tokenizer() -> Any:
    """GPT-2 style: adds nothing; ``<|endoftext|>`` is bos, eos and pad."""
    from transformers import PreTrainedTokenizerFast

    backend = _train_backend(["<|endoftext|>"], post_bos=None)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


@pytest.fixture(scope="session")
def bare_tokenizer() -> Any:
    """No special tokens at all."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=_train_backend([], post_bos=None))


def make_llama(vocab_size: int, seed: int = 0, layers: int = 2, context: int = 64) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=context,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger logits than the 0.02-std init, so greedy has clear winners
        model.lm_head.weight.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="session")
def model(tokenizer: Any) -> Any:
    """An untrained tiny Llama over ``tokenizer``'s vocabulary."""
    return make_llama(len(tokenizer))


@pytest.fixture(scope="session")
def trained_model(tokenizer: Any) -> Any:
    """A tiny Llama that has memorised ``FACTS``: BOS prompt completion EOS."""
    model = make_llama(len(tokenizer), seed=1)
    rows = [
        [*tokenizer.encode(prompt + completion, add_special_tokens=True), tokenizer.eos_token_id]
        for prompt, completion in FACTS
    ]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class ComposedLike(torch.nn.Module):
    """The shape of a composed model: ``forward`` returns a dict, ``generate`` returns ids.

    It wraps an HF model so results must equal the HF model's exactly.
    """

    def __init__(self, inner: Any, tokenizer: Any) -> None:
        super().__init__()
        self.anchor = inner
        self.tokenizer = tokenizer

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        return {"logits": self.anchor(input_ids=input_ids, attention_mask=attention_mask).logits}

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.anchor.generate(input_ids, **kwargs)


class BigramModel:
    """A fake model with fixed logits: the next-token logits are a row of ``table`` per token."""

    def __init__(self, table: torch.Tensor, tokenizer: Any) -> None:
        self.table = table
        self.tokenizer = tokenizer

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.table[input_ids]


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory, model: Any, tokenizer: Any) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

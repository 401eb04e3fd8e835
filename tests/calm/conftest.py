"""Tiny frozen bases for the CALM tests, built once per session.

Anchor: a 4-block Llama (d=64).  Augments: an 8-block Llama (d=32, a different
width and depth), a 2-block Qwen3 (d=48) as a second augment, a GPT-2 (d=32),
and a Llama that reads text with a different (SentencePiece-style) tokenizer.
Weights are random and perturbed, so a composition that leaked or misrouted
anything would show up in the logits.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny import make_tokenizer, randomize_

VOCAB = 320


def _config(arch: str, d: int, layers: int, heads: int, vocab: int) -> Any:
    from transformers import AutoConfig

    special = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if arch == "gpt2":
        return AutoConfig.for_model(
            "gpt2",
            vocab_size=vocab,
            n_embd=d,
            n_layer=layers,
            n_head=heads,
            n_positions=256,
            n_inner=2 * d,
            **special,
        )
    return AutoConfig.for_model(
        arch,
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=d // heads,
        max_position_embeddings=256,
        **special,
    )


def build_base(
    folder: Path, arch: str, d: int, layers: int, heads: int, *, seed: int, tokenizer: Any
) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        _config(arch, d, layers, heads, len(tokenizer)), dtype=torch.float32
    )
    randomize_(model, seed)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny matmuls run fastest on one thread; several contend badly on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calm_bases")
    bpe = make_tokenizer(VOCAB, "bytelevel")
    meta = make_tokenizer(VOCAB, "metaspace")
    return {
        "anchor": build_base(root / "anchor", "llama", 64, 4, 4, seed=1, tokenizer=bpe),
        "augment": build_base(root / "augment", "llama", 32, 8, 4, seed=2, tokenizer=bpe),
        "qwen3": build_base(root / "qwen3", "qwen3", 48, 2, 4, seed=3, tokenizer=bpe),
        "gpt2": build_base(root / "gpt2", "gpt2", 32, 4, 4, seed=4, tokenizer=bpe),
        "meta": build_base(root / "meta", "llama", 32, 4, 4, seed=5, tokenizer=meta),
    }


TEXTS = [
    "the quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "numbers 0 1 2 3 4 5 6 7 8 9 and 12 + 30 = 42.",
    "fusion of language models keeps what each parent knows.",
    "layers are copied, spliced and trained.",
]


def random_ids(n: int, length: int, seed: int, low: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, VOCAB, (n, length), generator=gen)


def quick_train(model: Any, steps: int = 8, lr: float = 1e-2, seed: int = 0) -> None:
    """A few Adam steps on text, so every Θ_C tensor (o_proj included) moves off its init."""
    from fusekit.strategies.calm.trainer import composition_collator, composition_dataset

    records = [{"text": t} for t in TEXTS] + [
        {"prompt": t[:12], "completion": t[12:]} for t in TEXTS
    ]
    dataset = composition_dataset(model, records, seq_len=48)
    collate = composition_collator(model)
    opt = torch.optim.Adam(model.composition.parameters(), lr=lr)
    rng = random.Random(seed)
    model.train()
    for _ in range(steps):
        batch = collate([dataset[rng.randrange(len(dataset))] for _ in range(4)])
        loss = model(**batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

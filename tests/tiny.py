"""Tiny, complete Hugging Face model folders for tests (offline, seconds to build).

``make_tiny_model(arch, folder)`` writes config, safetensors weights, generation
config and a small byte-level BPE tokenizer trained in-process.  Weights are
random *and* perturbed away from their initialisation — norm gains and biases
included — so that a test of "zero the output projection" or "zero the post-norm
gain" cannot pass by accident on a parameter that was already zero or one.

Qwen3 gets a mixed, non-alternating ``layer_types`` with a window smaller than
the test sequences, and Gemma 2 alternates sliding/full with a small window, so
a wrong per-layer config mapping changes logits.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gpt2", "phi"]
# Also buildable, used by the arch-facts tests (MoE, other post-norm families).
EXTRA_ARCHS = ["gemma3_text", "olmo2", "phi3", "mixtral", "qwen2_moe", "qwen3_moe"]

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM = 64, 128, 4, 2, 16
WINDOW = 4  # sliding window, shorter than test sequences so it matters

_TEXT = (
    "the quick brown fox jumps over the lazy dog. "
    "def add(a, b):\n    return a + b\n"
    "fusion of language models keeps what each parent knows. "
    "layers are copied, spliced and trained; numbers 0 1 2 3 4 5 6 7 8 9. "
)


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int, kind: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif kind == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet
    )
    tok.train_from_iterator([_TEXT] * 20, trainer=trainer)
    return tok.to_str()


def make_tokenizer(vocab_size: int = 320, kind: str = "bytelevel") -> Any:
    """A ``PreTrainedTokenizerFast`` (ids 0..3 = pad, bos, eos, unk); at most ``vocab_size``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tokenizer_json(vocab_size, kind))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def tiny_config(
    arch: str, *, num_layers: int = 4, vocab_size: int = 320, tie: bool | None = None
) -> Any:
    """A transformers config for a tiny ``arch`` model."""
    from transformers import AutoConfig

    special = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if arch == "gpt2":
        kwargs: dict[str, Any] = dict(
            n_embd=HIDDEN, n_layer=num_layers, n_head=HEADS, n_positions=128, n_inner=INTERMEDIATE
        )
    else:
        kwargs = dict(
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=num_layers,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            head_dim=HEAD_DIM,
            max_position_embeddings=128,
        )
    if arch == "qwen3":
        # Mixed and not merely alternating: full, sliding, sliding, full, ...
        types = ["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(num_layers)]
        kwargs.update(use_sliding_window=True, sliding_window=WINDOW, layer_types=types)
    if arch in ("gemma2", "gemma3_text"):
        kwargs.update(sliding_window=WINDOW, query_pre_attn_scalar=HEAD_DIM)
    if arch == "gemma3_text":
        kwargs.update(sliding_window_pattern=2)
    if arch in ("mixtral", "qwen2_moe", "qwen3_moe"):
        kwargs.update(
            num_local_experts=3,
            num_experts=3,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            shared_expert_intermediate_size=32,
            router_jitter_noise=0.0,
        )
    if tie is not None:
        kwargs["tie_word_embeddings"] = tie
    return AutoConfig.for_model(arch, vocab_size=vocab_size, **special, **kwargs)


def randomize_(model: Any, seed: int) -> None:
    """Perturb every parameter, so no weight, gain or bias is exactly 0 or 1."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            scale = 0.1 if param.ndim == 1 else 0.02
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32) * scale
            param.add_(noise.to(param.dtype))


def make_tiny_model(
    arch: str,
    folder: str | Path,
    *,
    num_layers: int = 4,
    vocab_size: int = 320,
    seed: int = 0,
    tie: bool | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> Path:
    """Build, randomise and save a tiny ``arch`` model plus tokenizer; returns ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    tokenizer = make_tokenizer(vocab_size)
    config = tiny_config(arch, num_layers=num_layers, vocab_size=vocab_size, tie=tie)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize_(model, seed)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder

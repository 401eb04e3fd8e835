"""Linear probes of an augment's layers: do they hold a key's value at the key?"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fusekit.errors import DataError
from fusekit.recipe.common import ScratchSpec
from fusekit.strategies.calm.probe import (
    _text_key_tokens,
    head_reads,
    head_reads_values,
    probe_kv_augment,
    probe_reads,
    read_keys,
)
from fusekit.strategies.calm.strategy import probe_kv_augments
from fusekit.tasks import KVConfig, kv_tokenizer
from fusekit.tasks.kv import key_values, kv_examples
from fusekit.tasks.tokenizers import train_tokenizer

KV = KVConfig(num_keys=120, value_max=3)  # every value among the held-in keys


def _model(seed: int, value_rows: bool) -> LlamaForCausalLM:
    """A tiny Llama whose key embeddings either spell out the value or are random."""
    tok = kv_tokenizer(KV)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    if value_rows:
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            prototype = torch.randn(KV.value_max + 1, emb.shape[1])  # one row per value
            for key, value in key_values(KV).items():
                row = tok.convert_tokens_to_ids(key)
                emb[row] = prototype[value] + 0.05 * torch.randn(emb.shape[1])
    return model


def test_probe_reads_values_written_into_the_key_embeddings() -> None:
    rows = probe_kv_augment(_model(0, value_rows=True), kv_tokenizer(KV), KV, n=400)
    assert [r["layer"] for r in rows] == [-1, 0, 1]
    embed = rows[0]
    assert embed["held_in"] == 1.0 and embed["held_out"] == 1.0


def test_probe_finds_nothing_in_random_key_embeddings() -> None:
    rows = probe_kv_augment(_model(0, value_rows=False), kv_tokenizer(KV), KV, n=400)
    # a fit on held-in keys memorises them but cannot carry over to unseen keys
    assert rows[0]["held_in"] > 0.9 and rows[0]["held_out"] < 0.4


def test_strategy_warns_when_no_paired_layer_holds_the_values(capsys) -> None:
    spec = ScratchSpec(task="kv_substitution", tokenizer="kv", kv={"num_keys": 120, "value_max": 3})
    tok = kv_tokenizer(KV)

    def composed(value_rows: bool, pairs: list[tuple[int, int]]) -> SimpleNamespace:
        return SimpleNamespace(
            augments=[_model(1, value_rows)],
            augment_tokenizers=[tok],
            composition_config=SimpleNamespace(augments=[SimpleNamespace(pairs=pairs)]),
        )

    recipe = SimpleNamespace(augment=[SimpleNamespace(from_scratch=spec)])
    report = probe_kv_augments(recipe, composed(True, [(-1, 0), (1, 1)]))
    assert report["augment_0"]["paired"] == [-1, 1]
    assert report["augment_0"]["best_paired"] == 1.0
    assert "warning" not in capsys.readouterr().err
    report = probe_kv_augments(recipe, composed(False, [(0, 0), (1, 1)]))
    err = capsys.readouterr().err
    assert report["augment_0"]["best_paired"] < 0.9 and "warning: augment_0" in err
    # a local-folder augment has no known table: nothing to probe
    assert probe_kv_augments(SimpleNamespace(augment=[SimpleNamespace(path="x")]), None) == {}


class _Oracle(torch.nn.Module):
    """An 'augment' whose output head names, at each key token, that key's value plus
    ``shift`` (modulo the values), ``lag`` positions later."""

    def __init__(self, shift: int = 0, lag: int = 0) -> None:
        super().__init__()
        tok = kv_tokenizer(KV)
        self.table = torch.zeros(len(tok), len(tok))
        for key, value in key_values(KV).items():
            digit = tok.convert_tokens_to_ids(str((value + shift) % (KV.value_max + 1)))
            self.table[tok.convert_tokens_to_ids(key), digit] = 1.0
        self.lag = lag
        # one pass-through block, so the read-out's layer hooks have a stream to read
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([torch.nn.Identity()])

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> SimpleNamespace:
        logits = self.model.layers[0](self.table[input_ids].roll(self.lag, dims=1))
        return SimpleNamespace(logits=logits)


def test_head_read_out_scores_the_augments_own_digit_at_each_key() -> None:
    tok = kv_tokenizer(KV)
    assert head_reads_values(_Oracle(), tok, KV, n=300, batch_size=64) == {
        "held_in": 1.0, "held_out": 1.0,
    }  # fmt: skip
    wrong = head_reads_values(_Oracle(shift=1), tok, KV, n=300)
    assert wrong == {"held_in": 0.0, "held_out": 0.0}
    late = head_reads_values(_Oracle(lag=1), tok, KV, n=300)  # the value one token later
    assert late["held_in"] < 0.5 and late["held_out"] < 0.5
    with pytest.raises(DataError, match="one-digit values"):
        head_reads_values(_Oracle(), tok, KVConfig(value_max=12), n=10)


def test_one_pass_serves_both_splits_and_both_read_outs() -> None:
    """The split changes which keys are held in, not the prompts: one pass scores both."""
    model, tok = _model(0, value_rows=True), kv_tokenizer(KV)
    balanced = KVConfig(num_keys=120, value_max=3, balanced_split=True)
    reads = read_keys(model, tok, KV, n=300, head=True)
    assert reads.states[0].shape[0] == len(reads.keys) == len(reads.values)
    assert probe_reads(reads, KV) == probe_kv_augment(model, tok, KV, n=300)
    assert probe_reads(reads, balanced) == probe_kv_augment(model, tok, balanced, n=300)
    assert not bool((reads.held_in(KV) == reads.held_in(balanced)).all())
    assert head_reads(reads, balanced) == head_reads_values(model, tok, balanced, n=300)
    with pytest.raises(ValueError, match="without the head"):
        head_reads(read_keys(model, tok, KV, n=20), KV)


def test_probe_needs_prompts() -> None:
    with pytest.raises(DataError, match="at least one prompt"):
        probe_kv_augment(_model(0, value_rows=True), kv_tokenizer(KV), KV, n=0)


def test_text_style_probes_the_token_that_ends_each_word_key() -> None:
    """Word keys span several tokens of a real tokenizer; the probe reads the last one."""
    text = KVConfig(style="text", shots=1, num_keys=40, min_operands=2, max_operands=2)
    prompts = [r["prompt"] for r in kv_examples("kv_arithmetic", 60, cfg=text)]
    tok = train_tokenizer("bpe", prompts, 300)
    table = key_values(text)
    encoded, found = _text_key_tokens(tok, prompts, table)
    for prompt, ids, hits in zip(prompts, encoded, found, strict=True):
        keys = [w for w in prompt.split() if w in table]
        assert [name for _, name in hits] == keys  # every key, once, in order
        for pos, name in hits:
            assert tok.decode(ids[: pos + 1]).endswith(name)  # the word is complete there
            assert not tok.decode(ids[:pos]).endswith(name)  # and not before
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    rows = probe_kv_augment(LlamaForCausalLM(config).eval(), tok, text, n=100)
    assert [r["layer"] for r in rows] == [-1, 0, 1]

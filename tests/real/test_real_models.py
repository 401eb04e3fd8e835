"""Every strategy on real pretrained weights and real tokenizers, through the CLI.

The tiny models of the rest of the suite share a word-level tokenizer and were
trained by fusekit; these are the checkpoints users bring: tied embeddings,
byte-level BPE with added tokens, SentencePiece with 262k ids, Gemma-3's
sliding-window ``layer_types``.  Exactness is checked where the math is exact.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.pipeline.conftest import cli, write_recipe
from tests.real.conftest import code, english, load
from tests.structural.helpers import cached_logits, greedy, uncached_logits

pytestmark = pytest.mark.real

MODELS = ["smollm2", "gemma3"]
# (groups for block expansion, SOLAR's m for depth up-scaling) per model
SHAPES = {"smollm2": (5, 6), "gemma3": (3, 4)}


def _ids(tokenizer, text: str, n: int) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :n]
    assert ids.shape[1] == n, "the probe text is too short"
    return ids


def _ok(result) -> None:
    assert result.code == 0, result.stderr[-3000:]


def test_conversion_records_the_gguf_file(real, gguf_files) -> None:
    from fusekit.io.gguf import conversion_record
    from fusekit.io.hashing import file_hash

    for name, folder in real.items():
        record = conversion_record(folder)
        assert record["sha256"] == file_hash(gguf_files[name]) and record["dequantised"]
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert json.loads((real["gemma3"] / "config.json").read_text())["vocab_size"] == 262144


@pytest.mark.parametrize("name", MODELS)
def test_block_expansion_is_exact(name: str, real, gguf_files, tmp_path: Path) -> None:
    """Δ = 0 without and with the KV cache and in generate(); Gemma past its 512-token window."""
    groups, _ = SHAPES[name]
    out = tmp_path / "expanded"
    _ok(cli("fuse", "--strategy", "block_expansion", "--model", str(gguf_files[name]),
            "--groups", str(groups), "-o", str(out)))  # fmt: skip
    record = json.loads((out / "fusekit.json").read_text())
    assert record["inputs"]["model"]["converted_from"]["dequantised"] is True
    base, tok = load(real[name])
    expanded, _ = load(out)
    assert expanded.config.num_hidden_layers == base.config.num_hidden_layers + groups
    ids = _ids(tok, " ".join(english(8, 2000)), 600 if name == "gemma3" else 64)
    with torch.no_grad():
        assert (uncached_logits(base, ids) - uncached_logits(expanded, ids)).abs().max() == 0
    short = ids[:, :24]
    assert (cached_logits(base, short, 8) - cached_logits(expanded, short, 8)).abs().max() == 0
    a, b = greedy(base, short, new=8), greedy(expanded, short, new=8)
    assert torch.equal(a.sequences, b.sequences)


@pytest.mark.parametrize("name", MODELS)
def test_depth_upscaling_loads_and_decodes(name: str, real, gguf_files, tmp_path: Path) -> None:
    _, m = SHAPES[name]
    out = tmp_path / "solar"
    _ok(cli("fuse", "--strategy", "depth_upscaling", "--model", str(gguf_files[name]),
            "--remove", str(m), "-o", str(out)))  # fmt: skip
    base_cfg = json.loads((real[name] / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    n = base_cfg["num_hidden_layers"]
    assert cfg["num_hidden_layers"] == 2 * (n - m)
    if "layer_types" in base_cfg:
        types = base_cfg["layer_types"]
        assert cfg["layer_types"] == types[: n - m] + types[m:]
    model, tok = load(out)
    ids = _ids(tok, code(1)[0], 16)
    cached, uncached = greedy(model, ids, new=8), greedy(model, ids, use_cache=False, new=8)
    assert torch.equal(cached.sequences, uncached.sequences)


def test_calm_across_two_real_tokenizers(real, gguf_files, tmp_path: Path) -> None:
    """Gemma-3 anchor + SmolLM2 augment: the anchor at init, cached == uncached after steps."""
    from fusekit import load_composed

    data = tmp_path / "mix.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in english(6) + code(6)))
    recipe = {
        "strategy": "calm", "anchor": str(gguf_files["gemma3"]),
        "augment": [str(gguf_files["smollm2"])], "every": 6,
        "data": {"train": str(data)},
        "train": {"steps": 0, "seq_len": 48, "batch_size": 2, "lr": 1e-3},
    }  # fmt: skip
    init = tmp_path / "calm-init"
    _ok(cli("run", str(write_recipe(tmp_path / "init.yaml", recipe)), "-o", str(init)))
    anchor, tok = load(real["gemma3"])
    ids = _ids(tok, english(1)[0], 32)
    composed = load_composed(init)
    with torch.no_grad():
        delta = composed(input_ids=ids).logits - anchor(ids, use_cache=False).logits
    assert delta.abs().max().item() == 0.0

    recipe["train"]["steps"] = 3
    trained = tmp_path / "calm-trained"
    _ok(cli("run", str(write_recipe(tmp_path / "train.yaml", recipe)), "-o", str(trained)))
    model, again = load_composed(trained), load_composed(trained)
    kw = {"max_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        assert torch.equal(model.generate(ids[:, :12], **kw),
                           model.generate(ids[:, :12], use_cache=False, **kw))  # fmt: skip
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
        moved = model(input_ids=ids).logits - anchor(ids, use_cache=False).logits
    assert moved.abs().max().item() > 0  # Θ_C trained


@pytest.mark.parametrize("name", MODELS)
def test_eval_bpb_matches_an_independent_computation(name: str, real, gguf_files, tmp_path):
    from fusekit.evaluation.tokenization import scoring_prefix

    model, tok = load(real[name])
    prefix = scoring_prefix(tok)
    for domain, texts in (("english", english()), ("code", code())):
        data = tmp_path / f"{domain}.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        out = tmp_path / f"{domain}.json"
        _ok(cli("eval", str(gguf_files[name]), "--data", str(data), "--json", str(out)))
        reported = json.loads(out.read_text())["value"]
        nats = 0.0
        with torch.no_grad():
            for text in texts:
                ids = torch.tensor([prefix + tok.encode(text, add_special_tokens=False)])
                logp = torch.log_softmax(model(ids, use_cache=False).logits[0, :-1].float(), -1)
                nats -= logp.gather(1, ids[0, 1:, None]).sum().item()
        expected = nats / math.log(2) / sum(len(t.encode("utf-8")) for t in texts)
        assert math.isfinite(reported) and reported == pytest.approx(expected, rel=1e-5)


def test_training_new_blocks_leaves_the_originals_bit_identical(real, gguf_files, tmp_path):
    from safetensors.torch import load_file

    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in code(8)))
    untrained, trained = tmp_path / "untrained", tmp_path / "trained"
    args = ["fuse", "--strategy", "block_expansion", "--model", str(gguf_files["smollm2"]),
            "--groups", "5"]  # fmt: skip
    _ok(cli(*args, "-o", str(untrained)))
    _ok(cli(*args, "--data", str(data), "--steps", "2", "--lr", "2e-4", "--batch-size", "2",
            "--set", "train.seq_len=32", "-o", str(trained)))  # fmt: skip
    before, after = (
        load_file(untrained / "model.safetensors"),
        load_file(trained / "model.safetensors"),
    )
    new = set(json.loads((trained / "fusekit.json").read_text())["trainable_layers"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    layer = lambda k: int(k.split(".")[2]) if k.startswith("model.layers.") else None  # noqa: E731
    assert changed and all(layer(k) in new for k in changed)


def test_fusellm_with_a_262k_source(real, gguf_files, tmp_path: Path) -> None:
    """SmolLM2 continued with Gemma-3 as source: the vocabulary map, then a few steps."""
    from fusekit.io.cache import cache_root
    from fusekit.strategies.fusellm.vocab import map_vocab, mapping_stats, token_table

    source, target = load(real["gemma3"])[1], load(real["smollm2"])[1]
    vmap = map_vocab(source, target, cache_dir=cache_root() / "vocab_maps")  # the run's cache
    assert vmap.shape == (len(source),) and (vmap >= 0).all()  # every source token lands
    stats = mapping_stats(vmap, source, target)
    assert stats["exact"] > 0.1 and stats["unmapped"] == 0.0  # 0.181 measured
    src, tgt = token_table(source), token_table(target)
    single = {c for c in tgt.canon if c is not None and len(c) == 1}
    byte_tokens = [i for i in np.flatnonzero(src.is_byte_token) if src.canon[i] in single]
    assert len(byte_tokens) == 235  # SmolLM2 lacks 21 single bytes (0x04, 0xC0, 0xF1-0xFF, …)
    for i in byte_tokens:  # <0x0A> -> the target's token for byte 0x0A, never a neighbour
        assert tgt.canon[vmap[i]] == src.canon[i]
    assert vmap[source.eos_token_id] == target.eos_token_id  # specials by role

    data = tmp_path / "mix.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in english(4) + code(4)))
    recipe = {
        "strategy": "fusellm", "target": str(gguf_files["smollm2"]),
        "sources": [str(gguf_files["gemma3"])], "lambda": 0.5,
        "train": {"data": str(data), "steps": 2, "seq_len": 32, "batch_size": 2, "lr": 1e-5},
    }  # fmt: skip
    out = tmp_path / "fused"
    done = cli("run", str(write_recipe(tmp_path / "f.yaml", recipe)), "-o", str(out))
    _ok(done)
    assert "source_0_alignment" in done.stdout
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["steps"] == 2 and math.isfinite(record["training"]["final_loss"])
    assert load(out)[0].config.vocab_size == 49152


def test_fusellm_lambda_one_is_plain_clm_on_real_models(real, tmp_path: Path) -> None:
    """At λ = 1 a FuseLLM step's loss and every gradient equal plain next-token training's,
    with Gemma-3 (262k ids) built as a source: the fusion term is never computed."""
    from transformers import TrainingArguments

    from fusekit.strategies.fusellm.losses import clm_loss
    from fusekit.strategies.fusellm.recipe import FuseLLMRecipe
    from fusekit.strategies.fusellm.strategy import FuseLLMStrategy

    data = tmp_path / "mix.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in english(2) + code(2)))
    recipe = FuseLLMRecipe(
        strategy="fusellm", target=str(real["smollm2"]), sources=[str(real["gemma3"])],
        train={"data": str(data), "steps": 1, "seq_len": 32, "batch_size": 2},
        **{"lambda": 1.0},
    )  # fmt: skip
    strategy = FuseLLMStrategy(recipe)
    built = strategy.build(strategy.prepare(tmp_path), strategy.main_unit)
    batch = built.collator([built.dataset[i] for i in range(2)])
    model = built.model.train()
    trainer = built.trainer_class(
        model=model, args=TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none",
                                            use_cpu=True), **built.trainer_kwargs,
    )  # fmt: skip
    fused = trainer.compute_loss(model, {**batch, "sources": list(batch["sources"])})
    fused.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = clm_loss(logits, batch["labels"])
    plain.backward()
    assert torch.equal(fused.detach(), plain.detach())
    assert grads and all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters())


def test_gemma3_trains_the_same_with_eager_and_sdpa_attention(real) -> None:
    """transformers 4.x's ``Gemma3ForCausalLM.forward`` (``models/gemma3/modeling_gemma3.py``)
    warned that Gemma-3 should be trained with ``eager`` attention, advice carried over
    from Gemma-2, whose attention scores are soft-capped; 5.25 no longer warns.
    Gemma-3 has no soft-capping, and at fusekit's training lengths (shorter than its
    512-token window) both kernels give the same loss and gradients — so a recipe's
    choice between them cannot explain a training result."""
    from fusekit.data.causal_lm import pack_texts
    from fusekit.io.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(real["gemma3"])
    ids = torch.tensor(pack_texts(tokenizer, code(n=8), 128)[:2])
    runs = {}
    for kernel in ("eager", "sdpa"):
        model = load_causal_lm(real["gemma3"], attn_implementation=kernel).train()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        runs[kernel] = (loss.detach(), grads)
    assert model.config.attn_logit_softcapping is None
    torch.testing.assert_close(runs["eager"][0], runs["sdpa"][0], rtol=1e-5, atol=1e-5)
    diff = (runs["eager"][1] - runs["sdpa"][1]).norm() / runs["eager"][1].norm()
    assert diff < 1e-4, diff

"""FuseLLM speed: vocabulary mapping, DTW alignment, training step — fusekit vs baselines.

Run:  OMP_NUM_THREADS=1 nice python3 bench/fusellm.py [--vocab 32000] [--chars 8000000] [--real]

Prints one table of times and ratios measured in this run on this machine:

1. vocabulary mapping of two ~32k vocabularies (byte-level BPE and a
   SentencePiece-style Metaspace BPE with byte fallback, both trained here on the
   Python standard library's sources): fusekit's ``map_vocab`` (rapidfuzz cdist,
   torch's thread count) vs the reference's approach (per source token, a Python ``min``
   over the whole target vocabulary), timed on a sample and scaled to all tokens;
2. DTW of one 2048 x 2048 pair of real tokenisations: ``dtw_align`` vs the
   reference's pure-Python DTW (numpy matrix, edit distance per cell) and vs a
   leaner pure-Python DTW on lists; both baselines are timed on 512 x 512 and
   scaled by the number of cells (x16), as stated in the output;
3. one training step (forward, backward, AdamW) of a d=128 4-layer Llama with the
   32k vocabulary on 8 x 256 tokens: plain CLM vs FuseLLM (λ=0.9, k=10, sparse
   targets fused from stored top-k) vs the reference's dense vocabulary-sized
   target built on the CPU;
4. the online mode on real text: ``FuseLLMTrainer.compute_loss`` with two d=128
   4-layer sources run inside the step (one on the Metaspace tokenizer, one on
   the target's), offsets alignment, vs the same trainer at λ=1 (plain CLM, the
   sources never run); and the sources' pass itself (rows grouped by length,
   top-k only at aligned positions) vs a straightforward one: one padded call,
   top-k everywhere, cross-entropy on the ``[B, V, L]`` layout; and the floor of
   any online step at full precision: plain CLM plus the sources' bare forward;
5. the same online step with the sources in bf16 (``source_precision: bf16``; the
   target still trains in fp32) vs plain CLM, and what bf16 changes in the fused
   target: the fusion loss it gives the same target logits, and how often its most
   probable token differs from the fp32 sources' fused target.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from timing import best_time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tokenizers(vocab: int, chars: int) -> tuple[Any, Any, list[str]]:
    from fusekit.tasks.corpora import domain_documents
    from fusekit.tasks.tokenizers import train_tokenizer

    docs = domain_documents("code", "train", max_chars=chars)
    start = time.perf_counter()
    bpe = train_tokenizer("bpe", docs, vocab)
    sp = train_tokenizer("metaspace", docs, vocab, dummy_prefix=True)
    print(
        f"trained 2 tokenizers ({len(bpe)}, {len(sp)} tokens) on {chars:,} chars "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return bpe, sp, docs


def bench_vocab(bpe: Any, sp: Any, rows: list) -> None:
    from rapidfuzz.distance import Levenshtein

    from fusekit.strategies.fusellm.vocab import compute_vocab_map, mapping_stats, token_table

    t_ours = best_time(lambda: compute_vocab_map(sp, bpe, "mined"), repeat=1)
    em = compute_vocab_map(sp, bpe, "em")
    src, tgt = token_table(sp), token_table(bpe)
    todo = [i for i, c in enumerate(src.canon) if c is not None and em[i] < 0]
    choices = [c for c in tgt.canon if c is not None]
    sample = random.Random(0).sample(todo, min(100, len(todo)))
    start = time.perf_counter()
    for i in sample:  # the reference: min over the whole vocabulary, one Python call per pair
        query = src.canon[i]
        min(((y, Levenshtein.distance(query, y)) for y in choices), key=lambda d: d[1])
    per_query = (time.perf_counter() - start) / len(sample)
    t_ref = per_query * len(todo)
    stats = mapping_stats(compute_vocab_map(sp, bpe), sp, bpe)
    rows.append(
        (
            f"vocab map {len(sp):,}->{len(bpe):,} (MinED)",
            t_ours,
            t_ref,
            f"{len(todo)} tokens need MinED; reference timed on {len(sample)}, scaled",
        )
    )
    print(f"  mapping: exact {stats['exact']:.1%}, nearest {stats['nearest']:.1%}")


def plain_dtw_numpy(series_1: list[str], series_2: list[str]) -> Any:
    """The reference's DTW loop as released (numpy matrix, edit distance per cell)."""
    from rapidfuzz.distance import Levenshtein

    matrix = np.zeros((len(series_1) + 1, len(series_2) + 1))
    matrix[0, :] = np.inf
    matrix[:, 0] = np.inf
    matrix[0, 0] = 0
    for i, vec1 in enumerate(series_1):
        for j, vec2 in enumerate(series_2):
            cost = Levenshtein.distance(vec1.replace("▁", ""), vec2.replace("Ġ", ""))
            matrix[i + 1, j + 1] = cost + min(matrix[i, j + 1], matrix[i + 1, j], matrix[i, j])
    return matrix


def plain_dtw_lists(series_1: list[str], series_2: list[str]) -> Any:
    """A leaner pure-Python DTW: lists, markers stripped once, rows reused."""
    from rapidfuzz.distance import Levenshtein

    a = [s.replace("▁", "") for s in series_1]
    b = [s.replace("Ġ", "") for s in series_2]
    inf = float("inf")
    prev = [0.0] + [inf] * len(b)
    rows = []
    for x in a:
        cur = [inf]
        for j, y in enumerate(b):
            cur.append(Levenshtein.distance(x, y) + min(prev[j + 1], cur[j], prev[j]))
        rows.append(cur)
        prev = cur
    return rows


def bench_dtw(bpe: Any, sp: Any, docs: list[str], rows: list) -> None:
    from fusekit.strategies.fusellm import dtw_align

    text = "\n\n".join(docs)
    src = sp.convert_ids_to_tokens(sp(text[:40000])["input_ids"])[:2048]
    tgt = bpe.convert_ids_to_tokens(bpe(text[:40000])["input_ids"])[:2048]
    assert len(src) == len(tgt) == 2048
    t_ours = best_time(lambda: dtw_align(src, tgt))
    small = 512
    scale = (len(src) * len(tgt)) / (small * small)
    t_np = best_time(lambda: plain_dtw_numpy(src[:small], tgt[:small]), repeat=1) * scale
    t_ls = best_time(lambda: plain_dtw_lists(src[:small], tgt[:small]), repeat=1) * scale
    note = f"baseline timed on {small}x{small}, scaled x{scale:.0f} by cells"
    rows.append(("DTW 2048x2048 vs released loop", t_ours, t_np, note))
    rows.append(("DTW 2048x2048 vs list-based loop", t_ours, t_ls, note))


def bench_step(vocab: int, rows: list) -> None:
    import torch

    from fusekit.strategies.fusellm.fusion import FusionConfig, SourceBatch, fuse
    from fusekit.strategies.fusellm.losses import clm_loss, fused_objective, next_token_mask

    model = _llama(vocab, seed=0, max_len=2048).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch, seq, k = 8, 256, 10
    ids = torch.randint(3, vocab, (batch, seq))
    labels = ids.clone()
    stored = SourceBatch(
        topk_ids=torch.randint(0, vocab, (batch, seq + 40, k)),
        topk_logits=torch.randn(batch, seq + 40, k).half(),
        align=torch.where(torch.rand(batch, seq) < 0.8, torch.arange(seq).expand(batch, -1), -1),
        nats=torch.rand(batch) * 100,
        n_pred=torch.full((batch,), seq),
        n_bytes=torch.full((batch,), 4 * seq),
    )
    vmap = torch.randint(0, vocab, (vocab,))

    def step(kind: str) -> None:
        opt.zero_grad()
        logits = model(input_ids=ids).logits
        if kind == "clm":
            loss = clm_loss(logits, labels)
        elif kind == "fusellm":
            target = fuse(
                [stored, stored],
                [vmap, vmap],
                ids,
                vocab,
                FusionConfig(),
                mask=next_token_mask(labels),
            )
            loss, _ = fused_objective(logits, labels, target, 0.9)
        else:  # the reference: dense [B, T, V] targets on the CPU, then soft cross-entropy
            target = fuse([stored, stored], [vmap, vmap], ids, vocab, FusionConfig())
            dense = torch.zeros(batch, seq, vocab)
            dense.scatter_add_(-1, target.ids, target.probs)
            soft = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), dense.flatten(0, 1), reduction="none"
            ).view(batch, seq)
            mask = next_token_mask(labels)
            loss = 0.9 * clm_loss(logits, labels) + 0.1 * (soft * mask).sum() / mask.sum()
        loss.backward()
        opt.step()

    for kind in ("clm", "fusellm", "dense"):
        step(kind)  # warm-up
    t_clm = best_time(lambda: step("clm"))
    t_fus = best_time(lambda: step("fusellm"))
    t_dense = best_time(lambda: step("dense"))
    rows.append(
        ("train step: FuseLLM offline vs plain CLM", t_fus, t_clm, "stored top-k; < 1x: slower")
    )
    rows.append(
        (
            "train step: FuseLLM vs dense-target reference",
            t_fus,
            t_dense,
            f"8x256 tokens, V={vocab}",
        )
    )


def _llama(vocab: int, seed: int, max_len: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=max_len,
    )
    return LlamaForCausalLM(config)


def plain_source_outputs(model: Any, input_ids: Any, attention_mask: Any, top_k: int) -> Any:
    """The straightforward sources' pass: one padded call, top-k and cross-entropy everywhere."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        top = torch.topk(logits, top_k, dim=-1)
        valid = (attention_mask[:, 1:] > 0) & (attention_mask[:, :-1] > 0)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none"
        )
    return top, (nll * valid).sum(dim=1)


def bf16_effect(trainer: Any, model: Any, fp32: list, bf16: list, batches: list) -> str:
    """What bf16 sources change in the fused target, on the same target logits."""
    import torch

    from fusekit.strategies.fusellm.fusion import fuse
    from fusekit.strategies.fusellm.losses import fusion_loss, next_token_mask

    losses: dict[str, list[float]] = {"fp32": [], "bf16": []}
    differ = positions = 0
    with torch.no_grad():
        for batch in batches:
            logits = model(input_ids=batch["input_ids"]).logits
            mask = next_token_mask(batch["labels"])
            tops = {}
            for name, models in (("fp32", fp32), ("bf16", bf16)):
                trainer.source_models = models
                target = fuse(
                    trainer._source_batches(list(batch["sources"])), trainer.vocab_maps,
                    batch["input_ids"], logits.shape[-1], trainer.fusion_config, mask=mask,
                    bytes_per_token=batch["bytes_per_token"],
                )  # fmt: skip
                losses[name].append(float(fusion_loss(logits, target.ids, target.probs, mask)))
                best = target.probs.argmax(dim=-1, keepdim=True)
                tops[name] = target.ids.gather(-1, best)[..., 0][mask]
            differ += int((tops["fp32"] != tops["bf16"]).sum())
            positions += int(mask.sum())
    trainer.source_models = fp32
    a, b = np.mean(losses["fp32"]), np.mean(losses["bf16"])
    return (
        f"fusion loss {a:.4f} (fp32 sources) vs {b:.4f} (bf16), rel. {abs(b - a) / a:.1e}; "
        f"fused top-1 differs at {differ / positions:.2%} of {positions:,} positions"
    )


def bench_online(
    tok: Any,
    model: Any,
    pairs: list[tuple[Any, Any]],
    docs: list[str],
    rows: list,
    shape: tuple[int, int, int, int],
) -> None:
    """The online rows for a target ``(tok, model)`` and sources ``[(tokenizer, model)]``;
    ``shape`` is (rows per batch, target tokens per row, sources' longest row, batches)."""
    import tempfile

    import torch
    from transformers import TrainingArguments

    from fusekit.data.causal_lm import pad_id
    from fusekit.strategies.fusellm.batching import FusionCollator, FusionDataset
    from fusekit.strategies.fusellm.data import chunk_texts, encode_chunks
    from fusekit.strategies.fusellm.examples import in_memory
    from fusekit.strategies.fusellm.extract import source_outputs
    from fusekit.strategies.fusellm.fusion import FusionConfig
    from fusekit.strategies.fusellm.prepare import prepare_source
    from fusekit.strategies.fusellm.trainer import FuseLLMTrainer

    batch, seq, max_len, reps = shape
    chunks = chunk_texts(docs, tok, seq)[: batch * reps]
    target_encs = encode_chunks(tok, chunks, seq)
    sources, read, vmaps = [], [], []
    for stok, smodel in pairs:
        prep = prepare_source(
            stok, tok, chunks, target_encs, align="offsets", max_len=max_len, progress=False
        )
        read.append((prep.encodings, prep.align))
        vmaps.append(prep.vocab_map)
        sources.append(smodel.eval())
    data = FusionDataset(in_memory(target_encs, read), [None] * len(read))
    collate = FusionCollator(pad_id(tok), [pad_id(stok) for stok, _ in pairs])
    batches = [collate([data[i] for i in range(b * batch, (b + 1) * batch)]) for b in range(reps)]
    model.train()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, report_to="none", use_cpu=True)
        trainer = FuseLLMTrainer(
            model=model,
            args=args,
            lam=0.9,
            fusion_config=FusionConfig(),
            vocab_maps=vmaps,
            top_k=10,
            source_models=sources,
        )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(lam: float, inputs: dict[str, Any]) -> None:
        trainer.lam = lam  # λ = 1: plain CLM, the sources are never run
        opt.zero_grad()
        loss = trainer.compute_loss(model, {**inputs, "sources": list(inputs["sources"])})
        loss.backward()
        opt.step()

    def source_pass(inputs: dict[str, Any], grouped: bool) -> None:
        for m, src in zip(sources, inputs["sources"], strict=True):
            if grouped:  # what the online step does
                source_outputs(
                    m, src["input_ids"], src["attention_mask"], 10, positions=src["align"]
                )
            else:
                plain_source_outputs(m, src["input_ids"], src["attention_mask"], 10)

    def forward_only(inputs: dict[str, Any]) -> None:
        with torch.no_grad():
            for m, src in zip(sources, inputs["sources"], strict=True):
                m(input_ids=src["input_ids"], attention_mask=src["attention_mask"], use_cache=False)

    half = [copy.deepcopy(m).to(torch.bfloat16) for m in sources]

    def step_half(inputs: dict[str, Any]) -> None:
        trainer.source_models = half
        try:
            step(0.9, inputs)
        finally:
            trainer.source_models = sources

    times: dict[str, list[float]] = {
        "clm": [], "fusion": [], "half": [], "grouped": [], "plain": [], "forward": []
    }  # fmt: skip
    jobs = {
        "clm": lambda b: step(1.0, b),
        "fusion": lambda b: step(0.9, b),
        "half": step_half,
        "grouped": lambda b: source_pass(b, True),
        "plain": lambda b: source_pass(b, False),
        "forward": forward_only,
    }
    for fn in jobs.values():
        fn(batches[0])  # warm-up
    for _ in range(2):
        for b in batches:
            for name, fn in jobs.items():
                start = time.perf_counter()
                fn(b)
                times[name].append(time.perf_counter() - start)
    best = {name: min(v) for name, v in times.items()}
    tokens = [int(s["attention_mask"].sum()) for s in batches[0]["sources"]]
    slots = [int(s["attention_mask"].numel()) for s in batches[0]["sources"]]
    rows.append(
        (
            "train step: FuseLLM online vs plain CLM",
            best["fusion"],
            best["clm"],
            f"2 sources run in the step; {batch}x{seq} target tokens, source tokens "
            f"{tokens} in padded {slots}",
        )
    )
    rows.append(
        (
            "train step: FuseLLM online, bf16 sources vs plain CLM",
            best["half"],
            best["clm"],
            "the sources in bf16 without gradients, the target in fp32; "
            + bf16_effect(trainer, model, sources, half, batches),
        )
    )
    rows.append(
        (
            "online sources' pass vs straightforward pass",
            best["grouped"],
            best["plain"],
            "grouped by length, top-k where aligned vs one call, top-k everywhere",
        )
    )
    rows.append(
        (
            "floor: plain CLM + the sources' bare forward (logits, no top-k) vs plain CLM",
            best["clm"] + best["forward"],
            best["clm"],
            "what any online step must at least cost without faster arithmetic for the sources",
        )
    )


def real_pair(rows: list) -> None:
    """The online rows on the real quick-start's models: SmolLM2-135M-Instruct continued
    with Gemma-3-270M (262,144 tokens) and itself as sources, 4 x 128 target tokens."""
    from real_models import folders

    from fusekit.io.loading import load_causal_lm, load_tokenizer
    from fusekit.tasks.corpora import domain_documents

    paths = folders()
    smol, gemma = load_tokenizer(paths["smollm2"]), load_tokenizer(paths["gemma3"])
    docs = domain_documents("code", "train", max_chars=60_000)
    docs += domain_documents("english", "train", max_chars=60_000)
    pairs = [(gemma, load_causal_lm(paths["gemma3"])), (smol, load_causal_lm(paths["smollm2"]))]
    bench_online(smol, load_causal_lm(paths["smollm2"]), pairs, docs, rows, (4, 128, 512, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--chars", type=int, default=8_000_000)
    parser.add_argument("--real", action="store_true", help="only the online rows, real pair")
    args = parser.parse_args()
    rows: list = []
    if args.real:
        real_pair(rows)
    else:
        bpe, sp, docs = tokenizers(args.vocab, args.chars)
        bench_vocab(bpe, sp, rows)
        bench_dtw(bpe, sp, docs, rows)
        bench_step(len(bpe), rows)
        target = _llama(len(bpe), seed=0, max_len=1024)
        pairs = [(sp, _llama(len(sp), 1, 1024)), (bpe, _llama(len(bpe), 2, 1024))]
        bench_online(bpe, target, pairs, docs[:200], rows, (8, 256, 1024, 3))
    print()
    print(f"| {'what':48s} | {'fusekit s':>10s} | {'baseline s':>10s} | {'speed-up':>8s} | note")
    print(f"|{'-' * 50}|{'-' * 12}|{'-' * 12}|{'-' * 10}|------")
    for name, ours, base, note in rows:
        print(f"| {name:48s} | {ours:10.3f} | {base:10.3f} | {base / ours:7.1f}x | {note}")


if __name__ == "__main__":
    main()

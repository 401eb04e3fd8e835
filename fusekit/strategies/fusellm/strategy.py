"""``FuseLLMStrategy``: recipe -> a continually trained target in a standard HF folder.

Steps of ``run``: resolve the models; cut the corpus into text chunks on the
target tokenizer; per source map the vocabulary, tokenise and align every
chunk; offline, extract each source's top-k into a resumable store under the
fusekit cache (online, keep the sources in memory); train the target on
``λ·CLM + (1−λ)·fusion``; save model and tokenizer.

Recipe fields read (duck-typed): ``target``, ``sources``, ``lam``, ``top_k``,
``temperature``, ``fusion``, ``align``, ``mode``, ``reference_fallback``,
``train`` (a TrainSpec) and the training data (``train.data`` or
``data.train``).  Optional: ``variant`` (``"reference"`` = per-token MinCE and
the released AvgCE weights), ``ce_unit``, ``avg_weighting``, ``cache_dir``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from fusekit.errors import DataError, FusekitError
from fusekit.strategies.base import Strategy


def _resolve(ref: Any) -> Path:
    try:
        from fusekit.sources import resolve_model
    except ImportError:  # pragma: no cover - only while fusekit.sources is absent
        return Path(getattr(ref, "path", ref))
    return resolve_model(ref)


def _local_path(ref: Any) -> Path | None:
    """A model reference's folder when it is a plain local folder (no training needed)."""
    if isinstance(ref, (str, Path)):
        return Path(ref)
    path = getattr(ref, "path", None)
    return Path(path) if isinstance(path, str) else None


def _texts(recipe: Any) -> list[str]:
    ref = recipe.train_data() if hasattr(recipe, "train_data") else None
    if ref is None:
        train = getattr(recipe, "train", None)
        ref = getattr(train, "data", None) or getattr(getattr(recipe, "data", None), "train", None)
    if ref is None:
        raise DataError("fusellm: give a training corpus in train.data or data.train")
    if isinstance(ref, (list, tuple)) and ref and all(isinstance(t, str) for t in ref):
        return list(ref)
    from fusekit.training.data import load_records

    texts = []
    for rec in load_records(ref):
        if "text" in rec:
            texts.append(rec["text"])
        elif "completion" in rec:
            texts.append(rec["prompt"] + rec["completion"])
    if not texts:
        raise DataError("fusellm: the training data holds no text records")
    return texts


def fusion_config_of(recipe: Any) -> Any:
    from fusekit.strategies.fusellm.fusion import FusionConfig

    base = (
        FusionConfig.reference()
        if getattr(recipe, "variant", None) == "reference"
        else FusionConfig()
    )
    base.temperature = float(getattr(recipe, "temperature", 1.0))
    base.fusion = getattr(recipe, "fusion", "mince")
    base.reference_fallback = bool(getattr(recipe, "reference_fallback", False))
    base.ce_unit = getattr(recipe, "ce_unit", None) or base.ce_unit
    base.avg_weighting = getattr(recipe, "avg_weighting", None) or base.avg_weighting
    return base


class FuseLLMStrategy(Strategy):
    """Knowledge fusion (Wan et al., 2024) with any number of sources and tokenizers."""

    tag = "fusellm"

    def input_paths(self) -> list[Path]:
        refs = [self.recipe.target, *self.recipe.sources]
        return [p for p in (_local_path(r) for r in refs) if p is not None]

    def plan(self) -> dict[str, Any]:
        r = self.recipe
        train = r.train
        k = int(getattr(r, "top_k", 10))
        return {
            "target": str(_local_path(r.target) or "from_scratch"),
            "sources": [str(_local_path(s) or "from_scratch") for s in r.sources],
            "lambda": getattr(r, "lam", 0.9),
            "top_k": k,
            "temperature": getattr(r, "temperature", 1.0),
            "fusion": getattr(r, "fusion", "mince"),
            "align": getattr(r, "align", "offsets"),
            "mode": getattr(r, "mode", "online"),
            "reference_fallback": bool(getattr(r, "reference_fallback", False)),
            "steps": train.steps,
            "seq_len": train.seq_len,
            # int32 id + fp16 logit per candidate, per source position (source sequences
            # may be longer than the target's; this is per target-length block).
            "offline_store_bytes_per_chunk_per_source": train.seq_len * k * 6,
        }

    # ------------------------------------------------------------------ run

    def run(self, workdir: Path) -> dict[str, Any]:
        import torch

        from fusekit.io.hashing import folder_hash
        from fusekit.io.loading import load_causal_lm, load_tokenizer
        from fusekit.strategies.fusellm.batching import (
            FusionCollator,
            FusionDataset,
            SourceExamples,
        )
        from fusekit.strategies.fusellm.data import chunk_texts, encode_chunks
        from fusekit.strategies.fusellm.prepare import prepare_source
        from fusekit.training.args import to_training_arguments
        from fusekit.training.data import pad_id
        from fusekit.training.trainer import LossLog, training_summary

        r, spec = self.recipe, self.recipe.train
        workdir = Path(workdir)
        target_dir = _resolve(r.target)
        source_dirs = [_resolve(s) for s in r.sources]
        tokenizer = load_tokenizer(target_dir)
        model = load_causal_lm(target_dir, dtype=torch.float32)
        if spec.steps == 0:
            model.save_pretrained(workdir, safe_serialization=True)
            tokenizer.save_pretrained(workdir)
            return {"trained": False, "steps": 0}

        align = getattr(r, "align", "offsets")
        mode = getattr(r, "mode", "online")
        lam, top_k = float(getattr(r, "lam", 0.9)), int(getattr(r, "top_k", 10))
        # The target, when it is also a source, goes first: MinCE ties go to it.
        target_hash = folder_hash(target_dir)
        hashes = [folder_hash(d) for d in source_dirs]
        order = sorted(range(len(source_dirs)), key=lambda i: hashes[i] != target_hash)
        source_dirs, hashes = [source_dirs[i] for i in order], [hashes[i] for i in order]

        chunks = chunk_texts(_texts(r), tokenizer, spec.seq_len)
        if not chunks:
            raise DataError("fusellm: the training data produced no text chunks")
        target_encs = encode_chunks(tokenizer, chunks, spec.seq_len)
        cache = Path(getattr(r, "cache_dir", None) or _cache_root())
        examples, vocab_maps, models, source_stats = [], [], [], []
        dtype = torch.bfloat16 if spec.precision == "bf16" else torch.float32
        for n, (sdir, shash) in enumerate(zip(source_dirs, hashes, strict=True)):
            stok = load_tokenizer(sdir)
            if not getattr(stok, "is_fast", False):
                raise FusekitError(f"source {sdir}: fusellm needs a fast (tokenizers) tokenizer")
            smodel = load_causal_lm(sdir, dtype=dtype)
            prepared = prepare_source(
                stok,
                tokenizer,
                chunks,
                target_encs,
                align=align,
                max_len=_source_max_len(smodel, spec.seq_len),
                cache_dir=cache / "vocab_maps",
                desc=f"align source {n}",
            )
            store = None
            if mode == "offline":
                store = _extract(smodel, stok, prepared, shash, top_k, spec, cache, n)
                del smodel
            else:
                models.append(smodel)
            examples.append(SourceExamples(prepared.encodings, prepared.align, store, pad_id(stok)))
            vocab_maps.append(prepared.vocab_map)
            source_stats.append(
                {"path": str(sdir), "is_target": shash == target_hash, **prepared.stats}
            )

        log = LossLog(workdir / "train_log.jsonl")
        trainer = _build_trainer(
            r,
            model,
            FusionDataset(target_encs, examples),
            FusionCollator(pad_id(tokenizer), [e.pad_id for e in examples]),
            to_training_arguments(spec, workdir / ".checkpoints"),
            log,
            vocab_maps,
            models if mode == "online" else None,
            lam,
            top_k,
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        model.save_pretrained(workdir, safe_serialization=True)
        tokenizer.save_pretrained(workdir)
        shutil.rmtree(workdir / ".checkpoints", ignore_errors=True)
        training = training_summary(trainer, result, log, seconds)
        return {
            "trained": True,
            "steps": training["steps"],
            "seconds": training["seconds"],
            "chunks": len(chunks),
            "mode": mode,
            "align": align,
            "sources": source_stats,
            "fusion": trainer.fusion_summary(),
            "final_loss": training["final_loss"],
            "training": training,  # loss curve and counts, as every strategy reports them
        }


def _cache_root() -> Path:
    try:
        from fusekit.sources import cache_root
    except ImportError:  # pragma: no cover
        return Path.home() / ".cache" / "fusekit"
    return cache_root()


def _source_max_len(model: Any, seq_len: int) -> int:
    """Sources may cut the same text into more tokens; allow up to 4x, within their context."""
    limit = getattr(model.config, "max_position_embeddings", None) or 4 * seq_len
    return int(min(4 * seq_len, limit))


def _extract(
    model: Any,
    tokenizer: Any,
    prepared: Any,
    model_hash: str,
    top_k: int,
    spec: Any,
    cache: Path,
    n: int,
) -> Any:
    from fusekit.strategies.fusellm.extract import (
        StoreReader,
        extract_to_store,
        ids_hash,
        store_key,
    )
    from fusekit.strategies.fusellm.vocab import tokenizer_fingerprint
    from fusekit.training.data import pad_id

    rows = [e.ids for e in prepared.encodings]
    meta = {"model": model_hash, "tokenizer": tokenizer_fingerprint(tokenizer)}
    key = store_key(meta=meta, data=ids_hash(rows), top_k=top_k)[:24]
    store_dir = cache / "fusellm_topk" / key
    extract_to_store(
        model,
        rows,
        [e.n_bytes for e in prepared.encodings],
        store_dir,
        top_k=top_k,
        pad_id=pad_id(tokenizer),
        batch_size=spec.batch_size,
        meta=meta,
        desc=f"extract source {n}",
    )
    return StoreReader(store_dir)


def _build_trainer(
    recipe: Any,
    model: Any,
    dataset: Any,
    collator: Any,
    args: Any,
    log: Any,
    vocab_maps: list[Any],
    source_models: list[Any] | None,
    lam: float,
    top_k: int,
) -> Any:
    from fusekit.strategies.fusellm.trainer import FuseLLMTrainer

    model.train()
    return FuseLLMTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[log],
        lam=lam,
        fusion_config=fusion_config_of(recipe),
        vocab_maps=vocab_maps,
        top_k=top_k,
        source_models=source_models,
    )

"""``FuseLLMStrategy``: recipe -> a continually trained target in a standard HF folder.

``prepare`` resolves the models and orders the sources (the target first when it
is also a source).  ``build`` — in every rank — cuts the corpus into text chunks
on the target tokenizer; per source maps the vocabulary, tokenises and aligns
every chunk; offline, extracts each source's top-k into a resumable store under
the fusekit cache (online, keeps the sources in memory); and hands the pipeline's
``fit`` the ``FuseLLMTrainer`` with ``λ·CLM + (1−λ)·fusion``.  Under
``--accelerate-config`` rank 0 builds first, so the vocabulary maps and stores
are computed once and read from the cache by the other ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit.data.chat import (
    Renderer,
    chat_template,
    conversation,
    is_conversational,
    template_text,
)
from fusekit.errors import DataError, FusekitError
from fusekit.estimates import load_bytes, model_facts, training_memory
from fusekit.io.cache import cache_root
from fusekit.io.hashing import folder_hash
from fusekit.io.loading import load_causal_lm, load_tokenizer
from fusekit.io.saving import config_dtype
from fusekit.models.resolve import model_inputs
from fusekit.recipe.common import TrainSpec, own_load
from fusekit.strategies.base import Built, Prepared, Strategy
from fusekit.strategies.fusellm.recipe import FuseLLMRecipe


def _chunks(
    recipe: FuseLLMRecipe, tokenizer: Any
) -> tuple[list[str], list[int], list[tuple[str, Any]]]:
    """The text chunks every model reads, how many characters of each are prompt, and the
    conversations (with their record's place), which each model reads in its own template.

    Text records are joined and cut into pieces of about ``seq_len`` target tokens
    (``chunk_texts``); a prompt/completion record is one chunk, prompt then completion,
    whose prompt carries neither loss (unless ``train.loss_on: all``), as in plain
    fine-tuning: the target learns to answer, not to write questions.
    """
    from fusekit.data.causal_lm import located_records
    from fusekit.strategies.fusellm.data import chunk_texts

    texts, pairs, talks = [], [], []
    for where, rec in located_records(recipe.train_data()):
        if is_conversational(rec):
            talks.append((where, conversation(where, rec)))
        elif "text" in rec:
            texts.append(rec["text"])
        elif isinstance(rec.get("completion"), str):
            pairs.append((rec["prompt"], rec["completion"]))
    if not texts and not pairs and not talks:
        raise DataError("fusellm: the training data holds no text records")
    chunks = chunk_texts(texts, tokenizer, recipe.train.seq_len) if texts else []
    prompt = [0] * len(chunks)
    keep_prompt = recipe.train.loss_on == "all"
    for p, c in pairs:
        chunks.append(p + c)
        prompt.append(0 if keep_prompt else len(p))
    return chunks, prompt, talks


def fusion_config_of(recipe: FuseLLMRecipe) -> Any:
    from fusekit.strategies.fusellm.fusion import FusionConfig

    return FusionConfig(
        temperature=float(recipe.temperature),
        fusion=recipe.fusion,
        reference_fallback=bool(recipe.reference_fallback),
    )


class FuseLLMStrategy(Strategy[FuseLLMRecipe]):
    """Knowledge fusion (Wan et al., 2024) with any number of sources and tokenizers."""

    tag = "fusellm"

    def plan(self) -> dict[str, Any]:
        r = self.recipe
        train = r.train
        return {
            "target": getattr(r.target, "path", "from_scratch"),
            "sources": [getattr(s, "path", "from_scratch") for s in r.sources],
            "lambda": r.lam,
            "top_k": r.top_k,
            "temperature": r.temperature,
            "fusion": r.fusion,
            "align": r.align,
            "mode": r.mode,
            "source_precision": r.source_dtype(),
            "reference_fallback": r.reference_fallback,
            "steps": train.steps,
            "seq_len": train.seq_len,
            # int32 id + fp16 logit per candidate, per source position (source sequences
            # may be longer than the target's; this is per target-length block).
            "offline_store_bytes_per_chunk_per_source": train.seq_len * r.top_k * 6,
            **self._estimates(),
        }

    def _estimates(self) -> dict[str, Any]:
        """Sizes of the target and sources, and one training step's memory: the sources
        run without gradients beside the target online, before training offline."""

        r = self.recipe
        target = model_facts(r.target)
        sources = [model_facts(s) for s in r.sources]
        online = r.mode == "online"
        load = r.model_load(own_load(r.target))
        held = [(target, load_bytes(load.dtype, target))]
        if online:  # offline, the sources ran (one at a time) before training
            held += [(m, load_bytes(r.source_load(own_load(ref)).dtype, m))
                     for m, ref in zip(sources, r.sources, strict=True)]  # fmt: skip
        return {
            "models": {
                "target": target.as_dict(),
                **{f"source_{i}": s.as_dict() for i, s in enumerate(sources)},
            },
            "trainable_parameters": target.parameters,
            "disk_bytes": target.parameters * target.disk_bytes_per_parameter,
            "training_memory_bytes": training_memory(
                held=held,
                trainable=target.parameters,
                backprop=[target],
                forward_only=sources if online else [],
                train=r.train,
                attention=load.attn_implementation,
                trained_bytes=held[0][1],
            ),
        }

    def prepare(self, workdir: Path) -> Prepared:

        target, *sources = model_inputs([self.recipe.target, *self.recipe.sources])
        # The target, when it is also a source, goes first: MinCE ties go to it.
        target_hash = folder_hash(target.path)
        is_target = [folder_hash(s.path) == target_hash for s in sources]
        order = sorted(range(len(sources)), key=lambda i: not is_target[i])
        inputs = {"target": target}
        inputs.update({f"source_{n}": sources[i] for n, i in enumerate(order)})
        templates = self.recipe.source_chat_templates or [None] * len(sources)
        return Prepared(
            inputs=inputs,
            plan=self.plan(),
            state={
                "source_is_target": [is_target[i] for i in order],
                "source_templates": [templates[i] for i in order],
            },
        )

    def units(self, prepared: Prepared) -> list[str]:
        return [self.main_unit]  # steps: 0 still saves the target, unchanged

    def build(self, prepared: Prepared, unit: str) -> Built:
        from fusekit.data.causal_lm import left_out
        from fusekit.strategies.fusellm.batching import FusionCollator, FusionDataset
        from fusekit.strategies.fusellm.conversations import (
            content_share,
            loss_share,
            target_example,
        )
        from fusekit.strategies.fusellm.data import encode_chunks, scored_positions

        r, spec = self.recipe, self.recipe.train
        target = prepared.inputs["target"]
        tokenizer = load_tokenizer(target.path, trust_remote_code=target.trust_remote_code)
        model = load_causal_lm(
            target.path,
            allow_pickle=target.allow_pickle,
            trust_remote_code=target.trust_remote_code,
            **r.model_load(target.load).loader_kwargs(),
        )
        save_dtype = config_dtype(target.path)
        if spec.steps == 0:
            return Built(model, None, None, tokenizer=tokenizer, save_dtype=save_dtype)
        chunks, prompt_chars, talks = _chunks(r, tokenizer)
        encs = encode_chunks(tokenizer, chunks, spec.seq_len)
        masks = [scored_positions(e, c, n) for e, c, n in zip(encs, chunks, prompt_chars,
                                                              strict=True)]  # fmt: skip
        # a completion cut off by seq_len leaves a row without a label (a 0/0 loss)
        learns = [m is None or bool(m[1:].any()) for m in masks]
        made = len(chunks) + len(talks)
        chunks = [c for c, keep in zip(chunks, learns, strict=True) if keep]
        target_encs = [e for e, keep in zip(encs, learns, strict=True) if keep]
        scored = [m for m, keep in zip(masks, learns, strict=True) if keep]
        talk_targets, kept = [], []
        if talks:
            renderer = Renderer(
                tokenizer, chat_template(tokenizer, spec.chat_template, target.path)
            )
            for where, conv in talks:
                loss_on = spec.loss_on or conv.default_loss_on
                example, mask = target_example(renderer, where, conv, loss_on, spec.seq_len)
                if mask[1:].any():  # else its trained turns lie past seq_len
                    kept.append((where, conv))
                    talk_targets.append(example)
                    target_encs.append(example.encoding)
                    scored.append(mask)
        talks = kept
        left_out(made - len(target_encs), made, spec.seq_len, "fusellm",
                 anything_left=bool(target_encs))  # fmt: skip
        if not target_encs:
            raise DataError("fusellm: the training data produced no text chunks")
        sources = [m for name, m in prepared.inputs.items() if name.startswith("source_")]
        examples, vocab_maps, models, stats = [], [], [], []
        for n, source in enumerate(sources):
            example, vocab_map, smodel, stat = self._source(
                n,
                source,
                tokenizer,
                chunks,
                target_encs,
                (talks, talk_targets, scored[len(chunks) :]),
                prepared,
            )
            stat["aligned_loss_positions"] = loss_share(example.align, scored)
            if talks:
                stat["aligned_content_positions"] = content_share(
                    example.align[len(chunks) :], talk_targets, scored[len(chunks) :]
                )
            examples.append(example)
            vocab_maps.append(vocab_map)
            stats.append({**stat, "is_target": prepared.state["source_is_target"][n]})
            if smodel is not None:
                models.append(smodel)
        from fusekit.data.causal_lm import pad_id
        from fusekit.strategies.fusellm.trainer import FuseLLMTrainer

        return Built(
            model=model,
            dataset=FusionDataset(target_encs, examples, scored),
            collator=FusionCollator(pad_id(tokenizer), [e.pad_id for e in examples]),
            tokenizer=tokenizer,
            trainer_class=FuseLLMTrainer,
            trainer_kwargs={
                "lam": r.lam,
                "fusion_config": fusion_config_of(r),
                "vocab_maps": vocab_maps,
                "top_k": r.top_k,
                "source_models": models if r.mode == "online" else None,
            },
            after_fit=lambda trainer: {"fusion": trainer.fusion_summary()},
            save_dtype=save_dtype,
            details={
                "chunks": len(chunks),
                "conversations": len(talks),
                "mode": r.mode,
                "align": r.align,
                "sources": stats,
                **{f"source_{n}_alignment": alignment_line(s) for n, s in enumerate(stats)},
            },
        )

    def _source(
        self,
        n: int,
        source: Any,
        tokenizer: Any,
        chunks: list[str],
        target_encs: list[Any],
        talks: tuple[list[tuple[str, Any]], list[Any], list[Any]],
        state: Prepared,
    ) -> tuple[Any, Any, Any, dict[str, Any]]:
        """One source: tokenizer, vocabulary map, alignment (text chunks, then the
        conversations in its own template), and its model or top-k store."""
        from fusekit.data.causal_lm import pad_id
        from fusekit.strategies.fusellm.batching import SourceExamples
        from fusekit.strategies.fusellm.conversations import (
            align_conversation,
            scored_messages,
            source_example,
        )
        from fusekit.strategies.fusellm.prepare import aligned_share, prepare_source

        r, spec = self.recipe, self.recipe.train
        stok = load_tokenizer(source.path, trust_remote_code=source.trust_remote_code)
        if not getattr(stok, "is_fast", False):
            raise FusekitError(f"source {source.path}: fusellm needs a fast (tokenizers) tokenizer")
        smodel = load_causal_lm(
            source.path,
            allow_pickle=source.allow_pickle,
            trust_remote_code=source.trust_remote_code,
            **r.source_load(source.load).loader_kwargs(),
        )
        max_len = _source_max_len(smodel, spec.seq_len)
        prepared = prepare_source(
            stok,
            tokenizer,
            chunks,
            target_encs[: len(chunks)],
            align=r.align,
            max_len=max_len,
            cache_dir=cache_root() / "vocab_maps",
            desc=f"align source {n}",
        )
        if talks[0]:
            renderer = Renderer(stok, self._source_template(n, source, stok, state))
            for (where, conv), target, mask in zip(*talks, strict=True):
                read = source_example(renderer, where, conv, max_len, scored_messages(target, mask))
                prepared.encodings.append(read.encoding)
                prepared.align.append(align_conversation(read, target))
            prepared.stats["aligned_positions"] = aligned_share(prepared.align)
        store = None
        if r.mode == "offline":
            shash = folder_hash(source.path)
            store = _extract(smodel, stok, prepared, shash, r.top_k, spec, cache_root(), n)
            smodel = None
        example = SourceExamples(prepared.encodings, prepared.align, store, pad_id(stok))
        return example, prepared.vocab_map, smodel, {"path": source.path, **prepared.stats}

    def _source_template(self, n: int, source: Any, tokenizer: Any, state: Prepared) -> str:
        """The template source ``n`` reads conversations in: the recipe's entry for it,
        else (a source that is the target) the target's, else its tokenizer's own."""

        given = state.state["source_templates"][n]
        if given is None and state.state["source_is_target"][n]:
            given = self.recipe.train.chat_template
        template = template_text(given) or getattr(tokenizer, "chat_template", None)
        if not template:
            raise DataError(
                f"the data holds conversations but source {source.path} has no chat template; "
                "give it one in source_chat_templates (a file or the template, one entry per "
                "source, null for a source's own)"
            )
        return str(template)


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
    spec: TrainSpec,
    cache: Path,
    n: int,
) -> Any:
    from fusekit.data.causal_lm import pad_id
    from fusekit.strategies.fusellm.extract import (
        StoreReader,
        counted_hash,
        extract_to_store,
        ids_hash,
        store_key,
    )
    from fusekit.strategies.fusellm.vocab import tokenizer_fingerprint

    rows = [e.ids for e in prepared.encodings]
    # The dtype the source ran in changes its logits, so a store is kept per dtype.
    dtype = str(next(model.parameters()).dtype)
    meta = {"model": model_hash, "tokenizer": tokenizer_fingerprint(tokenizer), "dtype": dtype}
    counted = [e.counted for e in prepared.encodings]
    positions = counted_hash(counted)  # text alone keeps the key it had before CE positions
    extra = {"counted": positions} if positions else {}
    key = store_key(meta=meta, data=ids_hash(rows), top_k=top_k, **extra)[:24]
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
        counted=counted,
    )
    return StoreReader(store_dir)


def alignment_line(stat: dict[str, Any]) -> str:
    """One summary line of a source's token alignment and vocabulary map: a poor alignment
    (few usable positions, many unmapped tokens) makes the fused loss mostly noise."""
    vocab = stat.get("vocab", {})
    shares = [
        f"{100 * stat[key]:.1f} % of {what} positions"
        for key, what in (
            ("aligned_loss_positions", "loss"),
            ("aligned_content_positions", "content"),
        )
        if key in stat
    ]
    within = f" ({', '.join(shares)})" if shares else ""
    return (
        f"{100 * stat.get('aligned_positions', 0.0):.1f} % positions aligned{within}; vocabulary "
        f"{100 * vocab.get('exact', 0.0):.1f} % exact, {100 * vocab.get('nearest', 0.0):.1f} % "
        f"nearest, {100 * vocab.get('unmapped', 0.0):.1f} % unmapped"
    )

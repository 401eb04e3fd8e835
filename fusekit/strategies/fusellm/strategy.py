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
    chat_template,
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
        from fusekit.data.causal_lm import pad_id
        from fusekit.strategies.fusellm.batching import FusionCollator, FusionDataset
        from fusekit.strategies.fusellm.examples import summary
        from fusekit.strategies.fusellm.trainer import FuseLLMTrainer
        from fusekit.strategies.fusellm.vocab import mapping_stats

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
        sources = [m for name, m in prepared.inputs.items() if name.startswith("source_")]
        readers = [self._reader(n, source, tokenizer, prepared) for n, source in enumerate(sources)]
        rows = self._examples(target, tokenizer, readers, prepared)
        found = summary(rows, len(sources))
        stores, models, stats = [], [], []
        for n, (source, reader) in enumerate(zip(sources, readers, strict=True)):
            smodel = load_causal_lm(
                source.path,
                allow_pickle=source.allow_pickle,
                trust_remote_code=source.trust_remote_code,
                **r.source_load(source.load).loader_kwargs(),
            )
            if r.mode == "offline":
                shash = folder_hash(source.path)
                stores.append(_extract(smodel, reader.tokenizer, rows, n, shash, r.top_k, spec))
                del smodel  # offline, one source is in memory at a time
            else:
                stores.append(None)
                models.append(smodel)
            assert reader.vocab_map is not None  # every source's reader has one
            stats.append({
                "path": source.path,
                **found.shares[n],
                "vocab": mapping_stats(reader.vocab_map, reader.tokenizer, tokenizer),
                "is_target": prepared.state["source_is_target"][n],
            })  # fmt: skip
        return Built(
            model=model,
            dataset=FusionDataset(rows, stores),
            collator=FusionCollator(pad_id(tokenizer), [pad_id(rd.tokenizer) for rd in readers]),
            tokenizer=tokenizer,
            trainer_class=FuseLLMTrainer,
            trainer_kwargs={
                "lam": r.lam,
                "fusion_config": fusion_config_of(r),
                "vocab_maps": [rd.vocab_map for rd in readers],
                "top_k": r.top_k,
                "source_models": models if r.mode == "online" else None,
            },
            after_fit=lambda trainer: {"fusion": trainer.fusion_summary()},
            save_dtype=save_dtype,
            details={
                "chunks": found.chunks,
                "conversations": found.conversations,
                "mode": r.mode,
                "align": r.align,
                "sources": stats,
                **{f"source_{n}_alignment": alignment_line(s) for n, s in enumerate(stats)},
            },
        )

    def _reader(self, n: int, source: Any, tokenizer: Any, state: Prepared) -> Any:
        """Source ``n``'s side of the data: its tokenizer, its vocabulary map onto the
        target's, how many tokens it may read, and its chat template (when asked for)."""
        from transformers import AutoConfig

        from fusekit.strategies.fusellm.examples import Reader
        from fusekit.strategies.fusellm.vocab import map_vocab, token_table

        stok = load_tokenizer(source.path, trust_remote_code=source.trust_remote_code)
        if not getattr(stok, "is_fast", False):
            raise FusekitError(f"source {source.path}: fusellm needs a fast (tokenizers) tokenizer")
        config = AutoConfig.from_pretrained(source.path, trust_remote_code=source.trust_remote_code)
        return Reader(
            stok,
            token_table(stok),
            # the text model's context (a multimodal config holds it in its text part)
            _source_max_len(config.get_text_config(), self.recipe.train.seq_len),
            lambda: self._source_template(n, source, stok, state),
            vocab_map=map_vocab(stok, tokenizer, "em" if self.recipe.align == "em" else "mined",
                                cache_dir=cache_root() / "vocab_maps"),
        )  # fmt: skip

    def _examples(self, target: Any, tokenizer: Any, readers: list[Any], state: Prepared) -> Any:
        """The examples every model reads (``examples``), from the data cache."""
        from fusekit.data.causal_lm import located_records
        from fusekit.data.tokenized import cached_rows, content_key, parts, tokenizer_key
        from fusekit.strategies.fusellm.examples import SHAPE, Reader, example_rows, schema
        from fusekit.strategies.fusellm.vocab import token_table

        r, spec = self.recipe, self.recipe.train
        reader = Reader(tokenizer, token_table(tokenizer), spec.seq_len,
                        lambda: chat_template(tokenizer, spec.chat_template, target.path))  # fmt: skip
        data = r.train_data()
        own = template_text(spec.chat_template) or getattr(tokenizer, "chat_template", None)
        theirs = [self._template_of(n, rd.tokenizer, state) for n, rd in enumerate(readers)]

        def templates() -> None:
            """A missing template is refused before any tokenising."""
            if not (own and all(theirs)) and any(
                is_conversational(rec) for _, rec in located_records(data)
            ):
                for side in (reader, *readers):
                    side.renderer()

        payload = {
            "shape": SHAPE,
            "data": [content_key(p) for p in parts(data)],
            "target": tokenizer_key(tokenizer),
            "target_template": own,
            "sources": [
                [tokenizer_key(rd.tokenizer), rd.max_len, template]
                for rd, template in zip(readers, theirs, strict=True)
            ],
            "align": r.align,
            "seq_len": spec.seq_len,
            "loss_on": spec.loss_on,
        }
        return cached_rows(
            payload,
            lambda: example_rows(data, reader, readers, align=r.align, seq_len=spec.seq_len,
                                 loss_on=spec.loss_on),
            schema(len(readers)),
            seq_len=spec.seq_len,
            source="fusellm",
            before=templates,
        )  # fmt: skip

    def _source_template(self, n: int, source: Any, tokenizer: Any, state: Prepared) -> str:
        """The template source ``n`` reads conversations in (``_template_of``); refused in
        one line when it has none."""
        template = self._template_of(n, tokenizer, state)
        if not template:
            raise DataError(
                f"the data holds conversations but source {source.path} has no chat template; "
                "give it one in source_chat_templates (a file or the template, one entry per "
                "source, null for a source's own)"
            )
        return template

    def _template_of(self, n: int, tokenizer: Any, state: Prepared) -> str | None:
        """The recipe's entry for source ``n``, else (a source that is the target) the
        target's, else its tokenizer's own; None when there is none (text needs none)."""
        given = state.state["source_templates"][n]
        if given is None and state.state["source_is_target"][n]:
            given = self.recipe.train.chat_template
        template = template_text(given) or getattr(tokenizer, "chat_template", None)
        return str(template) if template else None


def _source_max_len(config: Any, seq_len: int) -> int:
    """Sources may cut the same text into more tokens; allow up to 4x, within their context."""
    limit = getattr(config, "max_position_embeddings", None) or 4 * seq_len
    return int(min(4 * seq_len, limit))


def _extract(
    model: Any, tokenizer: Any, rows: Any, n: int, model_hash: str, top_k: int, spec: TrainSpec
) -> Any:
    """Source ``n``'s top-k at every position of its reading of the cached examples, in
    a resumable store of the cache; the rows are read from the Arrow file a shard at a time."""
    from fusekit.data.causal_lm import pad_id
    from fusekit.strategies.fusellm.examples import Column
    from fusekit.strategies.fusellm.extract import (
        StoreReader,
        counted_hash,
        extract_to_store,
        ids_hash,
        store_key,
    )
    from fusekit.strategies.fusellm.vocab import tokenizer_fingerprint

    ids = Column(rows, f"s{n}_ids")
    counted = Column(rows, f"s{n}_counted", dtype=bool)
    # The dtype the source ran in changes its logits, so a store is kept per dtype.
    dtype = str(next(model.parameters()).dtype)
    meta = {"model": model_hash, "tokenizer": tokenizer_fingerprint(tokenizer), "dtype": dtype}
    data, positions = ids_hash(ids), counted_hash(counted)
    extra = {"counted": positions} if positions else {}  # text alone keeps its older key
    key = store_key(meta=meta, data=data, top_k=top_k, **extra)[:24]
    store_dir = cache_root() / "fusellm_topk" / key
    extract_to_store(
        model,
        ids,
        rows.data.column(f"s{n}_n_bytes").to_numpy(),
        store_dir,
        top_k=top_k,
        pad_id=pad_id(tokenizer),
        batch_size=spec.batch_size,
        meta=meta,
        desc=f"extract source {n}",
        counted=counted,
        digests=(data, positions),
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

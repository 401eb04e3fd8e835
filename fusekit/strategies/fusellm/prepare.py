"""Per-source preparation: vocabulary map, tokenisation and alignment of every chunk.

Alignment choices (the recipe's ``align``):

* ``mined`` — what the released README's commands run
  (``FuseLLM/src/utils/token_alignment.py`` with ``--vocab_align_type soft``
  and the MinED map from ``vocab_mapping.py``): DTW over the two token
  sequences, and a pair counts when the source token maps onto the target
  token through the MinED vocabulary map (or has the same bytes); top-k
  candidates are mapped by MinED, so every candidate lands somewhere.
* ``em`` — ``--vocab_align_type hard``, the default of ``token_alignment.py``'s
  ``parse_args``: the same DTW, but both the pair test and the candidates use
  exact matches only (unmatched candidates are dropped), as in ``others.py``'s
  ``transform_step_logits``.
* ``offsets`` — exact: a pair counts when both tokens cover the same bytes of
  the text; candidates are mapped by MinED.

DTW is fed each token's bytes spelled with ``▁`` for spaces (so ``Ċ`` and
``<0x0A>`` are the same string).  The released ``transform_step_logits`` feeds
it ``convert_ids_to_tokens`` strings instead.  The two give the same costs when
both tokenizers are byte-level BPE (GPT-2's byte alphabet relabels bytes one to
one) or when every token spells printable ASCII and spaces.  They differ on
byte tokens, control characters and non-ASCII text: the released code compares
SentencePiece's newline ``<0x0A>`` as six characters and byte-level BPE's ``Ċ``
as one, and ``é`` as one character in SentencePiece and two in byte-level BPE;
fusekit compares a newline as one byte and ``é`` as two on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fusekit.log import bars_disabled
from fusekit.strategies.fusellm.align import dtw_align, match_positions, offsets_match
from fusekit.strategies.fusellm.conversations import aligned_counts
from fusekit.strategies.fusellm.data import Encoding
from fusekit.strategies.fusellm.vocab import TokenTable, map_vocab, mapping_stats, token_table

ALIGN_METHODS = ("mined", "em", "offsets")


def dtw_strings(table: TokenTable, ids: Sequence[int] | np.ndarray) -> list[str]:
    """Token strings for DTW: the token's bytes with ``▁`` for spaces; specials as spelled."""
    ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    inside = (ids_arr >= 0) & (ids_arr < len(table))
    spelled = np.where(inside, table.spelled[np.where(inside, ids_arr, 0)], "")
    return spelled.tolist()


def align_chunk(
    method: str,
    source: Encoding,
    target: Encoding,
    vocab_map: np.ndarray,
    source_table: TokenTable,
    target_table: TokenTable,
) -> np.ndarray:
    """Source position per target position (``-1`` = fall back to the gold token)."""
    if method == "offsets":
        return offsets_match(source.spans, target.spans)
    if method not in ("mined", "em"):
        raise ValueError(f"align must be one of {', '.join(ALIGN_METHODS)}, got {method!r}")
    mapping = dtw_align(
        dtw_strings(source_table, source.ids), dtw_strings(target_table, target.ids)
    )
    return match_positions(
        mapping,
        source.ids,
        target.ids,
        vocab_map,
        source_canon=source_table.canon,
        target_canon=target_table.canon,
    )


@dataclass
class PreparedSource:
    """One source, ready for extraction or online training."""

    vocab_map: np.ndarray
    encodings: list[Encoding]
    align: list[np.ndarray]
    stats: dict[str, Any] = field(default_factory=dict)


def prepare_source(
    source_tokenizer: Any,
    target_tokenizer: Any,
    chunks: Sequence[str],
    target_encodings: Sequence[Encoding],
    *,
    align: str,
    max_len: int,
    cache_dir: Any = None,
    progress: bool = True,
    desc: str = "align",
) -> PreparedSource:
    """Map the vocabulary, tokenise every chunk with the source tokenizer and align it."""
    from tqdm.auto import tqdm

    from fusekit.strategies.fusellm.data import encode_chunks

    vocab_method: Literal["mined", "em"] = "em" if align == "em" else "mined"
    vmap = map_vocab(source_tokenizer, target_tokenizer, vocab_method, cache_dir=cache_dir)
    src_table, tgt_table = token_table(source_tokenizer), token_table(target_tokenizer)
    encodings = encode_chunks(source_tokenizer, chunks, max_len)
    aligned = []
    for enc, tgt in tqdm(
        zip(encodings, target_encodings, strict=True),
        total=len(encodings),
        desc=desc,
        disable=True if not progress else bars_disabled(),
        unit="chunk",
    ):
        aligned.append(align_chunk(align, enc, tgt, vmap, src_table, tgt_table))
    return PreparedSource(
        vmap, encodings, aligned, alignment_stats(aligned, vmap, source_tokenizer, target_tokenizer)
    )


def aligned_share(aligned: Sequence[np.ndarray]) -> float:
    """Share of target positions with a next token that have a usable source position."""
    counts = (aligned_counts(a, None)[0] for a in aligned)
    usable, total = sum(counts, np.zeros(2, dtype=np.int64))
    return int(usable) / max(int(total), 1)


def alignment_stats(
    aligned: Sequence[np.ndarray], vmap: np.ndarray, source_tokenizer: Any, target_tokenizer: Any
) -> dict[str, Any]:
    """Share of target positions (with a next token) that have a usable source position."""
    return {
        "aligned_positions": aligned_share(aligned),
        "vocab": mapping_stats(vmap, source_tokenizer, target_tokenizer),
    }

"""Training examples for a composed model, and the collator that pads them.

With a shared tokenizer the examples are the ordinary causal-LM ones of
``fusekit.data.causal_lm`` (prompt/completion → loss on the completion and EOS;
text → packed blocks, loss everywhere): the augment reads the anchor's ids.

With a different-tokenizer augment every model tokenises the *same text*
itself; each token gets a character key (``masks.offset_keys``).  A token
belongs to the completion when its text ends after the prompt.  Texts are not
packed in this mode (packing would splice unrelated texts inside one augment
token); each text is one example, truncated to ``seq_len`` anchor tokens, and the
augment keeps the tokens that end within the anchor's truncated text.

A conversation is rendered in the anchor's chat template (the anchor is the model
that predicts, and its template is the format its outputs are read in) and every
augment reads that same rendered text with its own tokenizer: cross-attention is
aligned by character offsets of one text, and a second rendering in the augment's
own template would share no offsets with it.  An augment then reads the anchor's
markup (``<start_of_turn>``) as ordinary text around contents it reads as usual.  An
anchor token carries the loss when its text ends inside a span the loss scores
(``fusekit.data.chat``: the assistant turns with their end-of-turn marker, by
default), so a token that straddles a span's start counts as inside it.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import torch

from fusekit.data.causal_lm import example_labels
from fusekit.data.chat import LossOn, Renderer, conversation, is_conversational
from fusekit.errors import DataError
from fusekit.strategies.calm.masks import offset_keys
from fusekit.strategies.calm.tokens import decoded_ends, encode_text

Example = dict[str, Any]


def scored_text(
    record: dict[str, Any], loss_on: LossOn | None, renderer: Renderer | None, where: str
) -> tuple[str, list[range], bool, int]:
    """The text every model reads, the character spans the loss scores, whether the
    anchor's EOS closes it (text and prompt/completion; a conversation's template ends
    its turns itself), and how many characters are prompt (what an ``encoder`` augment
    reads: before the completion, or before a conversation's first scored turn)."""
    if "text" in record:
        return record["text"], [range(0, len(record["text"]))], True, 0
    if is_conversational(record):
        if renderer is None:
            raise DataError(f"{where}: conversations need the anchor's chat template")
        talk = conversation(where, record)
        text, spans = renderer.spans(where, talk, loss_on or talk.default_loss_on)
        return text, spans, False, spans[0].start if spans else 0
    text = record["prompt"] + record["completion"]
    start = 0 if loss_on == "all" else len(record["prompt"])
    return text, [range(start, len(text))], True, len(record["prompt"])


def encode_offsets_example(
    record: dict[str, Any],
    anchor_tokenizer: Any,
    augment_tokenizers: Sequence[Any],
    shared: Sequence[bool],
    seq_len: int,
    loss_on: LossOn | None = None,
    renderer: Renderer | None = None,
    where: str = "record",
) -> Example:
    """One text tokenised by every model, with labels, character keys and validity."""
    text, spans, closes, prompt_chars = scored_text(record, loss_on, renderer, where)
    # A template writes its own BOS; the tokenizer's would come twice.
    anchor = encode_text(anchor_tokenizer, text, add_special_tokens=closes)
    ids, ends = list(anchor.ids), list(anchor.ends)
    if closes and anchor_tokenizer.eos_token_id is not None:
        ids.append(anchor_tokenizer.eos_token_id)
        ends.append(len(text))
    labels = [
        i if any(s.start < e <= s.stop for s in spans) else -100
        for i, e in zip(ids, ends, strict=True)
    ]
    for t in range(anchor.n_prefix):  # leading specials are never targets
        labels[t] = -100
    ids, ends, labels = ids[:seq_len], ends[:seq_len], labels[:seq_len]
    keys, _ = offset_keys(ends, is_augment=False)
    limit = keys[-1] if keys else 0
    augments: list[dict[str, list[Any]]] = []
    for tok, same in zip(augment_tokenizers, shared, strict=True):
        if same:
            a_ids, a_ends = ids, ends
        else:
            enc = encode_text(tok, text, add_special_tokens=closes)
            a_ids, a_ends = enc.ids, enc.ends
        a_keys, a_valid = offset_keys(a_ends, is_augment=True)
        n = sum(1 for k in a_keys if k <= limit)
        augments.append({"input_ids": list(a_ids[:n]), "keys": a_keys[:n], "valid": a_valid[:n]})
    return {
        "input_ids": ids,
        "labels": labels,
        "anchor_keys": keys,
        "augments": augments,
        "prompt_chars": prompt_chars,
    }


#: How ``offsets_examples`` are kept in the Arrow cache (``cached_rows``).
OFFSETS_SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int64())),
    ("labels", pa.list_(pa.int64())),
    ("anchor_keys", pa.list_(pa.int64())),
    ("augments", pa.list_(pa.struct([("input_ids", pa.list_(pa.int64())),
                                     ("keys", pa.list_(pa.int64())),
                                     ("valid", pa.list_(pa.bool_()))]))),
    ("prompt_chars", pa.int64()),
])  # fmt: skip


def offsets_examples(
    records: Iterable[dict[str, Any]],
    anchor_tokenizer: Any,
    augment_tokenizers: Sequence[Any],
    shared: Sequence[bool],
    seq_len: int,
    *,
    loss_on: LossOn | None = None,
    renderer: Renderer | None = None,
    source: str = "data",
) -> Generator[Example, None, tuple[int, int]]:
    """Examples for a composition with at least one different-tokenizer augment: the
    text pieces first, then the other records in order.  ``records`` is read twice, a
    record at a time (a list, or ``RecordStream`` over a file): the text is cut into
    pieces as it is read, never held whole.

    An example with no trained token within ``seq_len`` (its answer lies past it) is
    left out, as on the shared-tokenizer path: a batch of such rows has a loss of 0 / 0.
    Returns (made, kept), for ``cached_rows`` to say.
    """
    from fusekit.data.causal_lm import iter_chunks, trains_a_token

    def texts() -> Iterator[str]:
        for i, rec in enumerate(records):
            if "text" not in rec and "completion" not in rec and "messages" not in rec:
                raise DataError(
                    f"{source}: record {i} has neither 'text', 'prompt'/'completion' nor 'messages'"
                )
            if "text" in rec:
                yield rec["text"]

    def encode(rec: dict[str, Any], where: str) -> Example:
        return encode_offsets_example(
            rec, anchor_tokenizer, augment_tokenizers, shared, seq_len, loss_on, renderer, where
        )

    # Plain text is cut into anchor-sized pieces (as the shared-tokenizer path packs
    # it): encoding each document whole would keep only its first seq_len tokens.
    made = kept = 0
    pieces = (encode({"text": p}, "text") for p in iter_chunks(texts(), anchor_tokenizer, seq_len))
    others = (encode(r, f"{source}: record {i}") for i, r in enumerate(records) if "text" not in r)
    for example in itertools.chain(pieces, others):
        made += 1
        if trains_a_token(example["labels"]):
            kept += 1
            yield example
    return made, kept


def _pad(rows: Sequence[Sequence[Any]], value: Any) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows])


def _augment_batch(rows: list[dict[str, Any]], pad: int) -> dict[str, Any]:
    """One augment model's padded batch: ids, attention mask, cross-mask keys, validity."""
    ids = [r["input_ids"] for r in rows]
    return {
        "input_ids": _pad(ids, pad),
        "attention_mask": _pad([[1] * len(r) for r in ids], 0),
        "keys": _pad([r["keys"] for r in rows], 0),
        "valid": _pad([r["valid"] for r in rows], False),
    }


class CalmCollator:
    """Right-pads anchor ids, labels and (if present) each augment's own inputs."""

    def __init__(self, pad_token_id: int, augment_pad_ids: Sequence[int] | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.augment_pad_ids = list(augment_pad_ids or [])

    def __call__(self, batch: list[Example]) -> dict[str, Any]:
        ids = [ex["input_ids"] for ex in batch]
        out: dict[str, Any] = {
            "input_ids": _pad(ids, self.pad_token_id),
            # a packed block of the shared-tokenizer cache has no labels: every token scores
            "labels": _pad([example_labels(ex) for ex in batch], -100),
            "attention_mask": _pad([[1] * len(r) for r in ids], 0),
        }
        if "augments" not in batch[0]:
            return out
        out["anchor_keys"] = _pad([ex["anchor_keys"] for ex in batch], 0)
        out["prompt_chars"] = torch.tensor([ex["prompt_chars"] for ex in batch])
        augment_inputs = []
        for k in range(len(batch[0]["augments"])):
            pad = self.augment_pad_ids[k] if k < len(self.augment_pad_ids) else 0
            augment_inputs.append(_augment_batch([ex["augments"][k] for ex in batch], pad))
        out["augment_inputs"] = augment_inputs
        return out


def offsets_inputs_from_ids(
    anchor_tokenizer: Any,
    augment_tokenizers: Sequence[Any],
    shared: Sequence[bool],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Anchor keys and augment inputs for a batch given as anchor ids only.

    For callers that know nothing of tokenizers (scoring harnesses): each row's
    text is what its anchor ids decode to, and the anchor tokens' keys are the
    decoded lengths (as in generation).  Padding may be on either side.
    """

    batch, width = input_ids.shape
    anchor_keys = torch.zeros(batch, width, dtype=torch.long)
    parts: list[list[dict[str, list[Any]]]] = [[] for _ in augment_tokenizers]
    for b in range(batch):
        where = attention_mask[b].bool()
        ids = input_ids[b][where].tolist()
        ends = decoded_ends(anchor_tokenizer, ids)
        keys, _ = offset_keys(ends, is_augment=False)
        anchor_keys[b, where] = torch.tensor(keys, dtype=torch.long)
        text = anchor_tokenizer.decode(ids, skip_special_tokens=True)
        for k, (tok, same) in enumerate(zip(augment_tokenizers, shared, strict=True)):
            if same:
                a_ids, a_ends = ids, ends
            else:
                enc = encode_text(tok, text)
                a_ids, a_ends = enc.ids, enc.ends
            a_keys, a_valid = offset_keys(a_ends, is_augment=True)
            parts[k].append({"input_ids": a_ids, "keys": a_keys, "valid": a_valid})
    augment_inputs = []
    for k, rows in enumerate(parts):
        tok = augment_tokenizers[k]
        pad = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0
        augment_inputs.append(_augment_batch(rows, pad))
    return anchor_keys, augment_inputs

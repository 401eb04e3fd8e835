"""Training data: records from files or built-in tasks, tokenised into causal-LM examples.

Two record shapes exist.  ``{"text": ...}`` records are packed into fixed-length
blocks (no padding wasted, loss on every token).  ``{"prompt", "completion"}``
records stay one example each, with the loss on the completion only, because
that is what "learn to answer" means and packing would blur the answer boundary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fusekit.errors import DataError

Record = dict[str, Any]


def _not_utf8(path: Path, exc: UnicodeDecodeError, where: str = "") -> DataError:
    return DataError(
        f"{path}: {where}byte {exc.start} is not UTF-8 ({exc.object[exc.start : exc.start + 1]!r});"
        " save the file as UTF-8"
    )


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, exc, f"line {lineno}: ") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {lineno} is not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}: line {lineno} is not a JSON object")
            records.append(rec)
    return records


def _read_file(path: Path) -> list[Record]:
    if path.is_dir() or path.suffix == ".parquet":
        # one reader for both with evaluation: split choice, row locations, clear errors
        from fusekit.evaluation.data import iter_records

        return [dict(record) for _, record in iter_records(path)]
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix in (".json", ".txt"):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
        if path.suffix == ".txt":
            return [{"text": text}]
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: a .json data file holds a list of records")
        return data
    raise DataError(
        f"{path}: unknown data format; use .jsonl, .json, .txt, .parquet or a datasets folder"
    )


def _check_shape(records: list[Record], where: str) -> list[Record]:
    if not records:
        raise DataError(f"{where}: no records")
    for i, rec in enumerate(records):
        if "text" in rec and isinstance(rec["text"], str):
            continue
        if isinstance(rec.get("prompt"), str) and isinstance(rec.get("completion"), str):
            continue
        if isinstance(rec.get("prompt"), str) and isinstance(rec.get("choices"), list):
            continue
        raise DataError(
            f"{where}: record {i} has neither a 'text' string nor 'prompt' and 'completion' strings"
        )
    if all("text" in rec and not rec["text"].strip() for rec in records):
        # one empty document would "train" on nothing but the tokenizer's specials
        raise DataError(f"{where}: holds no text (every record is empty)")
    return records


def load_records(ref: Any) -> list[Record]:
    """Records for a data reference: a path, a ``FileData``/``TaskData`` or a list of them."""
    if ref is None:
        raise DataError("no data given")
    if isinstance(ref, list) and ref and isinstance(ref[0], dict) and not hasattr(ref[0], "task"):
        return _check_shape(list(ref), "<records>")
    if isinstance(ref, list):
        return [rec for part in ref for rec in load_records(part)]
    if isinstance(ref, (str, Path)):
        path = Path(ref)
        if not path.exists():
            raise DataError(f"{path}: data file does not exist")
        return _check_shape(_read_file(path), str(path))
    if hasattr(ref, "task"):
        from fusekit.tasks import task_examples

        recs = task_examples(
            ref.task,
            split=ref.split,
            keys=ref.keys,
            n=ref.n,
            seed=ref.seed,
            max_chars=ref.max_chars,
            kv=ref.kv,
        )
        return _check_shape(recs, f"task {ref.task}")
    if hasattr(ref, "path"):
        return load_records(ref.path)
    raise DataError(f"cannot read data from {ref!r}")


def encode_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, seq_len: int
) -> tuple[list[int], list[int]]:
    """Token ids and labels with the loss on the completion (and EOS) only."""
    p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        c_ids = [*c_ids, tokenizer.eos_token_id]
    ids = (p_ids + c_ids)[:seq_len]
    labels = ([-100] * len(p_ids) + c_ids)[:seq_len]
    return ids, labels


def chunk_texts(
    texts: Iterable[str], tokenizer: Any, seq_len: int, separator: str = "\n\n", batch: int = 256
) -> list[str]:
    """Join documents with ``separator`` and cut the stream into pieces of ~``seq_len`` tokens.

    The text-level sibling of ``pack_texts``, for training that tokenises the same
    text with several tokenizers (FuseLLM's sources, CALM's augments): pieces are
    text, not ids.  Cuts fall on ``tokenizer``'s token starts, so no text is lost or
    duplicated; a trailing piece shorter than a quarter block is dropped unless
    it is the only one.
    """
    content = max(1, seq_len - tokenizer.num_special_tokens_to_add(pair=False))
    stream: list[str] = []
    starts: list[int] = []
    base = 0
    docs = [t for t in texts if t]
    pieces = [doc + (separator if k < len(docs) - 1 else "") for k, doc in enumerate(docs)]
    for first in range(0, len(pieces), batch):  # one tokenizer call per batch of documents
        part = pieces[first : first + batch]
        enc = tokenizer(part, add_special_tokens=False, return_offsets_mapping=True)
        for piece, offsets in zip(part, enc["offset_mapping"], strict=True):
            starts.extend(base + a for a, _ in offsets)
            stream.append(piece)
            base += len(piece)
    text = "".join(stream)
    cuts = starts[::content]
    if cuts:
        cuts[0] = 0  # whatever precedes the first token (e.g. trimmed spaces) stays in
    chunks = []
    for k, a in enumerate(cuts):
        b = cuts[k + 1] if k + 1 < len(cuts) else len(text)
        n_tokens = min(content, len(starts) - k * content)
        if k > 0 and k == len(cuts) - 1 and n_tokens < content // 4:
            chunks[-1] += text[a:b]  # a short tail joins the previous piece (truncated later)
            continue
        chunks.append(text[a:b])
    return [c for c in chunks if c.strip()]


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts in front of every encoding (``[bos]``), or ``[]``."""
    probe = "a b"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def pack_texts(tokenizer: Any, texts: Iterable[str], seq_len: int) -> list[list[int]]:
    """Documents joined by EOS into one stream, cut into blocks that each start with the
    tokenizer's prefix (BOS where it adds one).

    A model trained with BOS has seen it at position 0 of every input, and evaluation
    and generation put it there; a block cut from the middle of a stream without it is
    an input the model never saw (Gemma-3's own loss on such blocks was 4.1–7.3 nats
    against 2.8–4.0 with BOS).  So each block is ``prefix + seq_len - len(prefix)``
    tokens of the stream, documents stay packed (no padding wasted) and the loss
    covers every token after the prefix.  A tokenizer that adds no BOS (SmolLM2's)
    packs as one plain stream.
    """
    prefix = special_prefix(tokenizer)
    content = max(1, seq_len - len(prefix))
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for text in texts:
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None and (not stream or stream[-1] != eos):
            stream.append(eos)
    starts = range(0, len(stream) - content + 1, content)
    blocks = [prefix + stream[i : i + content] for i in starts]
    if not blocks and stream:
        blocks = [prefix + stream]
    return blocks


def predicted_tokens(dataset: Any) -> int:
    """Whether any position of ``dataset`` is scored by the loss: >0 if so, else 0.

    Labels follow Hugging Face's convention (the model shifts them), so position 0
    is never predicted and ``-100`` is ignored; an example without labels (FuseLLM's)
    is scored on every position.  Stops at the first example that predicts anything.
    """
    for i in range(len(dataset)):
        example = dataset[i]
        labels = example.get("labels")
        if labels is None:
            labels = example["input_ids"]
        n = sum(1 for t in list(labels)[1:] if int(t) != -100)
        if n:
            return n
    return 0


class CausalLMDataset:
    """A list of ``{"input_ids", "labels"}`` examples; a torch-compatible map dataset."""

    def __init__(self, records: Sequence[Record], tokenizer: Any, seq_len: int) -> None:
        self.examples: list[dict[str, list[int]]] = []
        texts = [r["text"] for r in records if "text" in r]
        for block in pack_texts(tokenizer, texts, seq_len) if texts else []:
            self.examples.append({"input_ids": block, "labels": list(block)})
        for r in records:
            if "completion" in r and "text" not in r:
                ids, labels = encode_prompt_completion(
                    tokenizer, r["prompt"], r["completion"], seq_len
                )
                self.examples.append({"input_ids": ids, "labels": labels})
        if not self.examples:
            raise DataError("the training data produced no examples (texts too short?)")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]


class PadCollator:
    """Right-pads a batch; padding is masked out of attention and loss."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(ex["input_ids"]) for ex in batch)
        ids, labels, mask = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [self.pad_token_id] * pad)
            labels.append(ex["labels"] + [-100] * pad)
            mask.append([1] * len(ex["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }


def pad_id(tokenizer: Any) -> int:
    """The id to pad with: pad, else EOS, else 0 (padding is masked either way)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0

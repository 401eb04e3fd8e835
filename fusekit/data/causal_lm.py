"""Training data: records from files or built-in tasks, tokenised into causal-LM examples.

Two record shapes exist.  ``{"text": ...}`` records are packed into fixed-length
blocks (no padding wasted, loss on every token).  ``{"prompt", "completion"}``
records stay one example each, with the loss on the completion only, because
that is what "learn to answer" means and packing would blur the answer boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusekit import log
from fusekit.data.chat import LossOn, Renderer, conversation, is_conversational
from fusekit.data.chat import chat_template as template_for
from fusekit.data.records import Located, iter_records, refuse_surrogates
from fusekit.errors import DataError
from fusekit.tasks import task_examples

Record = dict[str, Any]


def _check_record(where: str, rec: Mapping[str, Any]) -> None:
    if is_conversational(rec):
        conversation(where, rec)  # roles and contents, checked here
        return
    if not (
        ("text" in rec and isinstance(rec["text"], str))
        or (isinstance(rec.get("prompt"), str) and isinstance(rec.get("completion"), str))
        or (isinstance(rec.get("prompt"), str) and isinstance(rec.get("choices"), list))
    ):
        raise DataError(
            f"{where}: the record has neither a 'text' string, 'prompt' and 'completion' "
            "(strings or lists of messages) nor 'messages'"
        )
    for name in ("text", "prompt", "completion"):
        if isinstance(rec.get(name), str):
            refuse_surrogates(where, name, rec[name])


def checked_records(located: Iterable[Located], where: str) -> Iterator[Located]:
    """``located`` records as they are read, each checked; refuses none at all, or only
    empty text (``where`` names the whole set in those two errors)."""
    count = 0
    only_empty_text = True
    for spot, rec in located:
        _check_record(spot, rec)
        count += 1
        only_empty_text = only_empty_text and "text" in rec and not rec["text"].strip()
        yield spot, rec
    if not count:
        raise DataError(f"{where}: no records, so no text to train or score on")
    if only_empty_text:
        # one empty document would "train" on nothing but the tokenizer's specials
        raise DataError(f"{where}: holds no text (every record is empty)")


def located_records(ref: Any) -> Iterator[Located]:
    """``(location, record)`` for every record of a data reference — a path, a
    ``FileData``/``TaskData``, a list of records or a list of references — checked,
    one at a time.

    Files go through the one reader training and evaluation share
    (``fusekit.data.records.iter_records``), so a file means the same records to both
    (a ``.txt`` is documents separated by blank lines), and a JSON Lines, Parquet or
    ``datasets`` corpus is never held whole.
    """
    if ref is None:
        raise DataError("no data given")
    if isinstance(ref, list) and ref and isinstance(ref[0], dict) and not hasattr(ref[0], "task"):
        yield from checked_records(iter_records(ref), "<records>")
    elif isinstance(ref, list):
        for part in ref:
            yield from located_records(part)
    elif isinstance(ref, (str, Path)):
        path = Path(ref)
        if not path.exists():
            raise DataError(f"{path}: data file does not exist")
        yield from checked_records(iter_records(path), str(path))
    elif hasattr(ref, "task"):
        recs = task_examples(
            ref.task,
            split=ref.split,
            keys=ref.keys,
            n=ref.n,
            seed=ref.seed,
            max_chars=ref.max_chars,
            kv=ref.kv,
        )
        label = f"task {ref.task}"
        yield from checked_records(((f"{label}[{i}]", r) for i, r in enumerate(recs)), label)
    elif hasattr(ref, "path"):
        yield from located_records(ref.path)
    else:
        raise DataError(f"cannot read data from {ref!r}")


def stream_records(ref: Any) -> Iterator[Record]:
    """``located_records`` without the locations."""
    for _, rec in located_records(ref):
        yield dict(rec)


class RecordStream:
    """A data reference's records, read anew, one at a time, on every iteration: for
    code that passes over the data more than once without holding it."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __iter__(self) -> Iterator[Record]:
        return stream_records(self.ref)


def load_records(ref: Any) -> list[Record]:
    """Records for a data reference (``located_records``), all of them in a list."""
    return list(stream_records(ref))


def encode_prompt_completion(
    tokenizer: Any, prompt: str, completion: str, seq_len: int, *, prompt_loss: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids and labels with the loss on the completion (and EOS) only, or with
    ``prompt_loss`` (``train.loss_on: all``) on the prompt too."""
    p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        c_ids = [*c_ids, tokenizer.eos_token_id]
    ids = (p_ids + c_ids)[:seq_len]
    labels = ((p_ids if prompt_loss else [-100] * len(p_ids)) + c_ids)[:seq_len]
    return ids, labels


#: Characters handed to the tokenizer at once.  A fast tokenizer keeps strings and
#: offsets for every token of its input, ~700 bytes a token: a single 50 MB line
#: tokenised whole took ~9 GB.  Pieces of a megabyte bound that at ~200 MB.
SEGMENT_CHARS = 1 << 20


def segments(text: str, size: int | None = None) -> Iterator[str]:
    """``text`` in pieces of at most ``size`` (``SEGMENT_CHARS``) characters whose ids join
    to the whole's.

    Each cut falls just before a space that starts a word (``" word"``), where
    byte-level and SentencePiece-style pre-tokenizers split anyway, so tokenising
    the pieces one by one gives the ids of the whole text.  A piece with no such
    space in its second half (one enormous word) is cut at ``size``; only that cut
    may tokenise differently.
    """
    size = size or SEGMENT_CHARS
    start, n = 0, len(text)
    while n - start > size:
        end = start + size
        cut = text.rfind(" ", start + size // 2, end)
        while cut > start and (cut + 1 >= n or text[cut + 1].isspace()):
            cut = text.rfind(" ", start + size // 2, cut)
        cut = cut if cut > start else end
        yield text[start:cut]
        start = cut
    if start < n or not text:
        yield text[start:]


def chunk_texts(
    texts: Iterable[str], tokenizer: Any, seq_len: int, separator: str = "\n\n", batch: int = 256
) -> list[str]:
    """``iter_chunks`` as a list."""
    return list(iter_chunks(texts, tokenizer, seq_len, separator, batch))


def iter_chunks(
    texts: Iterable[str], tokenizer: Any, seq_len: int, separator: str = "\n\n", batch: int = 256
) -> Iterator[str]:
    """Join documents with ``separator`` and cut the stream into pieces of ~``seq_len`` tokens.

    The text-level sibling of ``pack_texts``, for training that tokenises the same
    text with several tokenizers (FuseLLM's sources, CALM's augments): pieces are
    text, not ids.  Cuts fall on ``tokenizer``'s token starts, so no text is lost or
    duplicated; a trailing piece shorter than a quarter block joins the one before it
    unless it is the only one.  Documents are read as the pieces are wanted, about a
    megabyte at a time, and at most two pieces' worth of text waits to be cut: memory
    does not grow with the corpus.
    """
    content = max(1, seq_len - tokenizer.num_special_tokens_to_add(pair=False))
    text = ""  # what is not yet cut off, from the current piece's first character
    starts = np.zeros(0, dtype=np.int64)  # its token starts, relative to ``text``
    for part in _batches(_segments_of(texts, separator), batch):
        enc = tokenizer(part, add_special_tokens=False, return_offsets_mapping=True)
        found = [starts]
        for piece, offsets in zip(part, enc["offset_mapping"], strict=True):
            found.append(len(text) + np.asarray([a for a, _ in offsets], dtype=np.int64))
            text += piece
        starts = np.concatenate(found)
        # A piece is final once the one after it is not the last (which could be a
        # short tail to join it): two further cuts must exist.
        low, first = 0, 0  # the current piece's first character and token
        while len(starts) - first > 2 * content:
            cut = int(starts[first + content])
            if text[low:cut].strip():
                yield text[low:cut]
            low, first = cut, first + content
        text, starts = text[low:], starts[first:] - low
    if len(starts) > content:
        cut = int(starts[content])
        head, tail = text[:cut], text[cut:]
        if len(starts) - content < content // 4:
            head, tail = head + tail, ""  # a short tail joins the piece before it
        for piece in (head, tail):
            if piece.strip():
                yield piece
    elif text.strip():
        yield text


def _segments_of(texts: Iterable[str], separator: str) -> Iterator[str]:
    """The non-empty documents, each but the last followed by ``separator``, in
    ``segments``: one document is held back to know whether it is the last."""
    held: str | None = None
    for doc in texts:
        if not doc:
            continue
        if held is not None:
            yield from segments(held + separator)
        held = doc
    if held is not None:
        yield from segments(held)


def _batches(pieces: Iterable[str], most: int) -> Iterator[list[str]]:
    """Consecutive pieces, at most ``most`` of them and about ``SEGMENT_CHARS`` characters
    a batch: one tokenizer call each, its memory bounded like a single segment's."""
    batch: list[str] = []
    chars = 0
    for piece in pieces:
        if batch and (len(batch) == most or chars + len(piece) > SEGMENT_CHARS):
            yield batch
            batch, chars = [], 0
        batch.append(piece)
        chars += len(piece)
    if batch:
        yield batch


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts in front of every encoding (``[bos]``), or ``[]``."""
    probe = "a b"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def continuation(tokenizer: Any) -> int | None:
    """How many ids a piece cut from mid-text gains in front when tokenised alone.

    0 for byte-level and Metaspace tokenizers (the cut falls where they split); 1 for
    a normaliser that prepends ``▁`` to every input (Llama-2's and Mistral's
    ``tokenizer.json``), whose extra marker is dropped; None when cutting would change
    the ids in another way, and the text is then tokenised whole.
    """
    for text in ("the cat sat on the mat", "x = 1 and y = 2", "Hello world again"):
        cut = text.index(" ", 4)
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        head = tokenizer(text[:cut], add_special_tokens=False)["input_ids"]
        tail = tokenizer(text[cut:], add_special_tokens=False)["input_ids"]
        if head + tail == whole:
            continue
        if head + tail[1:] == whole:
            return 1
        return None
    return 0


def document_ids(tokenizer: Any, texts: Sequence[str], batch: int = 256) -> list[np.ndarray]:
    """Each document's ids, followed by EOS (when the tokenizer has one and the document
    does not end with it already); an empty document gives none.

    Documents are tokenised in ``segments``, several per tokenizer call (``_batches``:
    about ``SEGMENT_CHARS`` characters a call, so one enormous line costs a segment's
    memory, not its own), and kept as compact int64 arrays, not lists of Python ints
    (36 bytes a token).  The in-memory packing (``token_stream``) and the Arrow cache
    (``fusekit.data.tokenized``) both tokenise text here, so their streams are equal.
    """
    extra = continuation(tokenizer)
    owners: list[tuple[int, int]] = []
    pieces: list[str] = []
    for d, text in enumerate(texts):
        for k, piece in enumerate(segments(text) if extra is not None else [text]):
            owners.append((d, k))
            pieces.append(piece)
    parts: list[list[np.ndarray]] = [[] for _ in texts]
    done = 0
    for group in _batches(pieces, batch):
        encoded = tokenizer(group, add_special_tokens=False)["input_ids"]
        for (d, k), ids in zip(owners[done : done + len(group)], encoded, strict=True):
            parts[d].append(np.asarray(ids[extra:] if k and extra else ids, dtype=np.int64))
        done += len(group)
    eos = tokenizer.eos_token_id
    out = []
    for doc in parts:
        ids = np.concatenate(doc) if doc else np.zeros(0, dtype=np.int64)
        if len(ids) and eos is not None and ids[-1] != eos:
            ids = np.append(ids, np.int64(eos))
        out.append(ids)
    return out


def token_stream(tokenizer: Any, texts: Iterable[str]) -> np.ndarray:
    """Documents' ids (``document_ids``: each followed by EOS) as one int64 array."""
    docs = document_ids(tokenizer, list(texts))
    return np.concatenate(docs) if docs else np.zeros(0, dtype=np.int64)


def packed_blocks(tokenizer: Any, texts: Iterable[str], seq_len: int) -> list[np.ndarray]:
    """``pack_texts`` as arrays: each block a row of one ``[blocks, seq_len]`` array."""
    prefix = np.asarray(special_prefix(tokenizer), dtype=np.int64)
    content = max(1, seq_len - len(prefix))
    stream = token_stream(tokenizer, texts)
    n = (len(stream) // content) * content
    if n == 0:
        return [np.concatenate([prefix, stream])] if len(stream) else []
    body = stream[:n].reshape(-1, content)
    rows = np.concatenate([np.broadcast_to(prefix, (len(body), len(prefix))), body], axis=1)
    return list(rows)


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
    return [block.tolist() for block in packed_blocks(tokenizer, texts, seq_len)]


def predicted_tokens(dataset: Any) -> int:
    """Whether any position of ``dataset`` is scored by the loss: >0 if so, else 0.

    Labels follow Hugging Face's convention (the model shifts them), so position 0
    is never predicted and ``-100`` is ignored; an example without labels (FuseLLM's)
    is scored on every position.  Stops at the first example that predicts anything.
    """
    for i in range(len(dataset)):
        labels = example_labels(dataset[i])
        n = sum(1 for t in list(labels)[1:] if int(t) != -100)
        if n:
            return n
    return 0


def left_out(count: int, total: int, seq_len: int, source: str, *, anything_left: bool) -> None:
    """Say that ``count`` of ``total`` examples train nothing within ``seq_len`` tokens, or,
    when nothing else is left to train on, refuse the data with the fix."""
    if not count:
        return
    if not anything_left:
        raise DataError(
            f"{source}: no example has a trained token within train.seq_len={seq_len} tokens "
            "(the answers lie past it); raise train.seq_len"
        )
    log.warning(
        f"fusekit: {source}: {count} of {total} examples have no trained token within "
        f"train.seq_len={seq_len} tokens (their answers lie past it) and are left out; "
        "raise train.seq_len to train on them"
    )


def example_labels(example: Mapping[str, Any]) -> Any:
    """An example's labels; a packed block carries none, as every position is scored."""
    labels = example.get("labels")
    return example["input_ids"] if labels is None else labels


def trains_a_token(labels: Sequence[int]) -> bool:
    """Whether an example has a labelled token to predict (position 0 never is): one whose
    answer was cut off by ``seq_len`` has none, and a batch of such examples has a loss of
    0 / 0."""
    return any(label != -100 for label in labels[1:])


def encode_example(
    record: Record,
    tokenizer: Any,
    seq_len: int,
    loss_on: LossOn | None,
    renderer: Renderer | None,
    where: str,
) -> tuple[list[int], list[int]] | None:
    """Ids and labels of one prompt/completion or conversational record, cut to ``seq_len``;
    None for a record that trains as neither (a multiple-choice one).  ``loss_on`` None is
    each shape's default: the completion, or for ``messages`` every assistant turn.  Text
    records are packed instead (``document_ids``)."""
    if is_conversational(record):
        assert renderer is not None, "conversations need a Renderer in their template"
        talk = conversation(where, record)
        return renderer.encode(where, talk, loss_on or talk.default_loss_on, seq_len)
    if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
        return encode_prompt_completion(
            tokenizer, record["prompt"], record["completion"], seq_len, prompt_loss=loss_on == "all"
        )
    return None


class CausalLMDataset:
    """``{"input_ids", "labels"}`` examples; a torch-compatible map dataset.

    Packed text blocks are kept as arrays and become lists only when a batch asks
    for them: a list of Python ints costs ~36 bytes a token, twice over for labels.
    Prompt/completion pairs and conversations stay one example each; conversations
    are rendered in ``chat_template`` (else the tokenizer's own) with the loss where
    ``loss_on`` says (``fusekit.data.chat``).  ``model`` and ``source`` name the model
    and the data in errors.
    """

    def __init__(
        self,
        records: Sequence[Record],
        tokenizer: Any,
        seq_len: int,
        *,
        loss_on: LossOn | None = None,
        chat_template: str | None = None,
        model: str = "the model",
        source: str = "data",
    ) -> None:
        texts = [r["text"] for r in records if "text" in r]
        self.blocks = packed_blocks(tokenizer, texts, seq_len) if texts else []
        renderer = None
        if any(is_conversational(r) for r in records):
            renderer = Renderer(tokenizer, template_for(tokenizer, chat_template, model))
        self.pairs: list[tuple[list[int], list[int]]] = []
        made = 0
        for i, record in enumerate(records):
            if "text" not in record:
                where = f"{source}: record {i}"
                pair = encode_example(record, tokenizer, seq_len, loss_on, renderer, where)
                if pair is not None:
                    made += 1
                    if trains_a_token(pair[1]):
                        self.pairs.append(pair)
        left_out(made - len(self.pairs), made, seq_len, source,
                 anything_left=bool(self.blocks or self.pairs))  # fmt: skip
        if not self.blocks and not self.pairs:
            raise DataError("the training data produced no examples (texts too short?)")

    def __len__(self) -> int:
        return len(self.blocks) + len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        if i < 0:
            i += len(self)
        if i < len(self.blocks):
            ids = self.blocks[i].tolist()
            return {"input_ids": ids, "labels": list(ids)}
        ids, labels = self.pairs[i - len(self.blocks)]
        return {"input_ids": ids, "labels": labels}


class PadCollator:
    """Right-pads a batch; padding is masked out of attention and loss.  ``width`` pads
    every batch to that many tokens at least: batches that several processes concatenate
    (accelerate's dispatch of a stream) must be equally wide."""

    def __init__(self, pad_token_id: int, width: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.width = width

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max([len(ex["input_ids"]) for ex in batch] + [self.width or 0])
        ids, labels, mask = [], [], []
        for ex in batch:
            pad = width - len(ex["input_ids"])
            ids.append(ex["input_ids"] + [self.pad_token_id] * pad)
            labels.append(list(example_labels(ex)) + [-100] * pad)
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

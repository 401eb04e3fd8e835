"""Training examples read, tokenised and packed while training asks for them: ``train.streaming``.

The Arrow cache (``fusekit.data.tokenized``) keeps a corpus's tokens on disk, which
is what a corpus larger than the disk (or one read once) cannot afford.  A stream
reads the records one at a time with the reader every other path uses, tokenises
``BATCH`` records at a time with the cache's own encoder, packs text into
``seq_len`` blocks as it goes and shuffles within a buffer of examples.  Memory holds
one batch of records and the buffer, whatever the corpus's size; nothing is written.

What a stream does differently from the cache, and why:

- **Order.** Examples come in the corpus's order, shuffled within ``buffer``
  examples (the cache is shuffled as a whole by the Trainer's sampler).  A corpus
  sorted by topic should be shuffled once on disk first.
- **No end.** At the end of the corpus reading starts again with the shuffle
  reseeded by ``(seed, pass)``, so the Trainer sees one endless epoch: a resumed
  run skips exactly the batches it trained, and resumed training equals
  uninterrupted training.  ``train.steps`` says how long to train.
- **Left out.** An example with no trained token within ``seq_len`` is left out, as
  the cache leaves it out; the stream cannot count them up front, so it says so at
  the end of the first pass.  Data with no example that predicts a token is refused
  in one line before training.
- **Memory.** The shuffle buffer holds its examples as Python lists, about 36 bytes a
  token (twice that for an example with labels): ``buffer × seq_len × 36`` bytes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fusekit import log
from fusekit.data.causal_lm import (
    example_labels,
    special_prefix,
    stream_records,
    trains_a_token,
)
from fusekit.data.chat import LossOn, is_conversational, template_text
from fusekit.data.chat import chat_template as template_for
from fusekit.data.tokenized import BATCH, Encoder, fill_blocks, flat_record, parts
from fusekit.errors import DataError

#: Examples the shuffle buffer holds by default.
BUFFER = 1000
Example = dict[str, Any]


class StreamedExamples(torch.utils.data.IterableDataset):
    """``{"input_ids", "labels"}`` examples of ``data``, endlessly, a pass at a time.

    ``labels`` is None for a packed block (the collator copies the ids), as in the
    cache.  Every argument but ``seed`` and ``buffer`` means what it means to
    ``tokenized_examples``.
    """

    def __init__(
        self,
        data: Any,
        tokenizer: Any,
        seq_len: int,
        *,
        loss_on: LossOn | None = None,
        chat_template: str | None = None,
        model: str = "the model",
        source: str = "data",
        seed: int = 0,
        buffer: int = BUFFER,
    ) -> None:
        super().__init__()
        self.data = data
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.loss_on = loss_on
        self.model = model
        self.source = source
        self.seed = seed
        self.buffer = buffer
        self.template = (
            template_text(chat_template) or getattr(tokenizer, "chat_template", None) or None
        )
        self.encoder = Encoder(tokenizer, seq_len, loss_on, self.template, source)

    def __iter__(self) -> Iterator[Example]:
        for number in itertools.count():
            made = 0
            for example in self.one_pass(number):
                made += 1
                yield example
            if not made:
                raise DataError(f"{self.source}: the training data produced no examples")

    def first(self) -> Example:
        """The first example of the corpus that predicts a token, or the one-line refusal
        of data that has none: checked before training, so a run never starts on a
        stream that trains nothing (an endless one would never say so)."""
        for example in self.one_pass(0, shuffle=False):
            if trains_a_token(example_labels(example)):
                return example
        raise DataError(
            f"{self.source}: the training data produced no examples (texts too short, or "
            f"every answer past train.seq_len={self.seq_len}?)"
        )

    def one_pass(self, number: int, *, shuffle: bool = True) -> Iterator[Example]:
        """One pass over the corpus, shuffled within the buffer by ``(seed, number)``."""
        examples = self._examples(number)
        if not shuffle or self.buffer <= 1:
            yield from examples
            return
        rng = random.Random(f"{self.seed}:{number}")
        held: list[Example] = []
        for example in examples:
            if len(held) < self.buffer:
                held.append(example)
                continue
            i = rng.randrange(len(held))
            yield held[i]
            held[i] = example
        rng.shuffle(held)
        yield from held

    def _examples(self, number: int) -> Iterator[Example]:
        """The corpus's examples in order: blocks as the text stream fills them, the other
        examples where their records are.  Left-out examples are said once, in pass 0."""
        prefix = np.asarray(special_prefix(self.tokenizer), dtype=np.int64)
        content = max(1, self.seq_len - len(prefix))
        carry = np.zeros(0, dtype=np.int64)
        blocks = made = kept = 0
        for start, batch in self._batches():
            encoded = self.encoder(batch, list(range(start, start + len(batch["text"]))))
            for ids, labels, packed in zip(
                encoded["ids"], encoded["labels"], encoded["packed"], strict=True
            ):
                if packed:
                    rows, carry = fill_blocks(carry, np.asarray(ids), prefix, content)
                    blocks += len(rows)
                    yield from ({"input_ids": row.tolist(), "labels": None} for row in rows)
                elif ids:
                    made += 1
                    if trains_a_token(labels):
                        kept += 1
                        yield {"input_ids": ids, "labels": labels}
        if not blocks and len(carry):  # shorter than one block: the stream is the block
            yield {"input_ids": [*prefix.tolist(), *carry.tolist()], "labels": None}
        if made > kept and number == 0:
            log.warning(
                f"fusekit: {self.source}: {made - kept} of {made} examples have "
                f"no trained token within train.seq_len={self.seq_len} tokens and were left "
                "out; raise train.seq_len to train on them"
            )

    def _batches(self) -> Iterator[tuple[int, dict[str, list[Any]]]]:
        """``BATCH`` records at a time, as the cache's encoder takes them (columns), with
        the number of the first, which errors name."""
        records = itertools.chain.from_iterable(stream_records(p) for p in parts(self.data))
        for start in itertools.count(0, BATCH):
            chunk = list(itertools.islice(records, BATCH))
            if not chunk:
                return
            if self.encoder.renderer is None and any(is_conversational(r) for r in chunk):
                # no template to render them in: the shared one-line refusal says so
                template_for(self.tokenizer, None, self.model)
            rows = [flat_record(r) for r in chunk]
            yield start, {name: [row[name] for row in rows] for name in rows[0]}


__all__ = ["BUFFER", "StreamedExamples"]

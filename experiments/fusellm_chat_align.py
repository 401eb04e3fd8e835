"""What chat templates cost FuseLLM's alignment: conversations vs the same contents as text.

FuseLLM pairs a target position with a source position that has read the same text.
On conversations each model reads its own template (``fusekit.strategies.fusellm.
conversations``), so only positions inside the messages' contents can pair.  This
script measures, for a target and a source with different tokenizers, the share of
the target's loss positions that predict assistant content and have a source position:

* **conversations**: each model reads the conversation in its template (the target
  its tokenizer's, the source ``--source-template``), aligned as the strategy does;
* **plain text**: the same messages' contents joined by blank lines, read by both as
  one text, aligned by ``offsets`` (exact, as above) and by ``mined`` (the paper's DTW),
  scored on the positions that predict a token of an assistant content.

If the templates cost nothing, the first is at least the second (offsets).  The first
token of each content can differ the other way: the conversation pairs it through the
header's last token, which both templates end at the content's start, while joined text
puts a blank line before it that two tokenizers may cut differently (SmolLM2 ``Ċ Ċ``,
Gemma-3 one ``\n\n``); the last two lines leave those positions out on both sides.

    python experiments/fusellm_chat_align.py models/smollm2-135m models/gemma3-270m \\
        --source-template recipes/real/templates/gemma3.jinja --n 300
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from fusekit.data.chat import Renderer, chat_template, conversation, template_text
from fusekit.io.loading import load_tokenizer
from fusekit.strategies.fusellm.conversations import (
    align_conversation,
    content_share,
    source_example,
    target_example,
)
from fusekit.strategies.fusellm.data import _char_to_byte, encode_chunks
from fusekit.strategies.fusellm.prepare import align_chunk
from fusekit.strategies.fusellm.vocab import map_vocab, token_table
from fusekit.tasks import task_examples


def conversation_share(
    target: Any, source: Any, template: str, talks: list[Any], *, first: bool = True
) -> float:
    """``first=False`` leaves out the positions that predict a content's first token."""
    tgt = Renderer(target, chat_template(target, None, "the target"))
    src = Renderer(source, template)
    aligned, examples, scored = [], [], []
    for k, conv in enumerate(talks):
        example, mask = target_example(tgt, f"#{k}", conv, conv.default_loss_on, 4096)
        read = source_example(src, f"#{k}", conv, 4096)
        if not first:
            starts = {c[0] for c in example.content if c is not None}
            mask = mask & ~np.isin(example.encoding.spans[:, 0], list(starts))
        aligned.append(align_conversation(read, example))
        examples.append(example)
        scored.append(mask)
    return content_share(aligned, examples, scored)


def text_share(
    target: Any, source: Any, talks: list[Any], method: str, *, first: bool = True
) -> float:
    """The contents as one text per conversation; positions predicting assistant content
    (``first=False``: but not a content's first token)."""
    vmap = map_vocab(source, target, "mined")
    src_table, tgt_table = token_table(source), token_table(target)
    hits = total = 0
    for conv in talks:
        parts, assistant, at = [], [], 0
        for message in conv.messages:
            body = message["content"].strip()
            if message["role"] == "assistant":
                assistant.append((at, at + len(body)))
            parts.append(body)
            at += len(body) + 2
        text = "\n\n".join(parts)
        to_byte = _char_to_byte(text)
        ranges = [(int(to_byte[a]), int(to_byte[b])) for a, b in assistant]
        (t_enc,) = encode_chunks(target, [text], 4096)
        (s_enc,) = encode_chunks(source, [text], 4096)
        pairs = align_chunk(method, s_enc, t_enc, vmap, src_table, tgt_table)
        spans = t_enc.spans
        inside = np.zeros(len(spans), dtype=bool)
        for a, b in ranges:
            inside |= (spans[:, 0] >= a + (0 if first else 1)) & (spans[:, 1] <= b)
            inside &= spans[:, 1] > spans[:, 0]
        where = np.flatnonzero(inside[1:])  # position t predicts token t + 1
        hits += int((pairs[where] >= 0).sum())
        total += len(where)
    return hits / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="target model folder (its tokenizer's template)")
    parser.add_argument("source", help="source model folder")
    parser.add_argument("--source-template", help="the source's template (default: its own)")
    parser.add_argument("--n", type=int, default=300, help="stdlib_chat conversations")
    args = parser.parse_args()
    target, source = load_tokenizer(args.target), load_tokenizer(args.source)
    template = template_text(args.source_template) or chat_template(source, None, args.source)
    talks = [conversation(f"#{k}", r) for k, r in enumerate(task_examples("stdlib_chat", n=args.n))]
    shares = {
        "conversations, each in its template": conversation_share(target, source, template, talks),
        "plain text, offsets": text_share(target, source, talks, "offsets"),
        "plain text, mined (DTW)": text_share(target, source, talks, "mined"),
        "conversations, first content tokens left out": conversation_share(
            target, source, template, talks, first=False
        ),
        "plain text, offsets, first content tokens left out": text_share(
            target, source, talks, "offsets", first=False
        ),
    }
    for name, share in shares.items():
        print(f"{100 * share:6.2f} %  {name}")
    print(json.dumps({"n": len(talks), **shares}))


if __name__ == "__main__":
    main()

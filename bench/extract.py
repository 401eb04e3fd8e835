"""FuseLLM offline extraction from Gemma-3-270M: peak memory against the logits' size.

Runs ``source_outputs`` (top-10 per position and the gold tokens' cross-entropy, what
the offline store keeps) on 8 rows of 512 tokens of the standard library's sources
through Gemma-3-270M's 262,144-token output layer, then a plain no-grad forward of
the same batch.  Prints the process's peak RSS after the model loads, after the
extraction (the output layer runs a slice of positions at a time, so no
``[8, 512, 262144]`` fp32 tensor is made: that would be 4.3 GB), and the times of
both.  Needs the two GGUF packages (docs/real-models.md).

Run: ``python bench/extract.py [--threads 1] [--rows 8] [--length 512]``.
"""

from __future__ import annotations

import argparse
import resource
import textwrap
import time
from pathlib import Path

import torch
from real_models import folders


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fusekit.io.loading import load_causal_lm, load_tokenizer
    from fusekit.strategies.fusellm.extract import source_outputs

    folder = folders()["gemma3"]
    model, tokenizer = load_causal_lm(folder).eval(), load_tokenizer(folder)
    text = Path(textwrap.__file__).read_text(encoding="utf-8") * 4
    ids = torch.tensor(tokenizer(text).input_ids[: args.rows * args.length])
    ids = ids.view(args.rows, args.length)
    mask = torch.ones_like(ids)
    vocab = model.get_output_embeddings().weight.shape[0]
    logits_mb = args.rows * args.length * vocab * 4 / 2**20
    loaded = _peak_mb()

    clock = time.perf_counter()
    source_outputs(model, ids, mask, 10)
    extract_s = time.perf_counter() - clock
    extracted = _peak_mb()

    clock = time.perf_counter()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, use_cache=False)
    forward_s = time.perf_counter() - clock

    print(f"Gemma-3-270M, {args.rows} x {args.length} tokens, vocabulary {vocab:,}, "
          f"{args.threads} thread(s)")  # fmt: skip
    print(f"full fp32 logits of the batch would be      {logits_mb:8.0f} MB")
    print(f"peak RSS, model loaded                      {loaded:8.0f} MB")
    print(
        f"peak RSS, after extraction (top-10 + CE)    {extracted:8.0f} MB  "
        f"(+{extracted - loaded:.0f} MB, {(extracted - loaded) / logits_mb:.2f}x the logits)"
    )
    print(
        f"extraction {extract_s:.2f} s vs plain no-grad forward {forward_s:.2f} s "
        f"-> x{extract_s / forward_s:.2f}"
    )


if __name__ == "__main__":
    main()

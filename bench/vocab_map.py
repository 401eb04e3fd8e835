"""FuseLLM's MinED vocabulary map on real vocabularies: time, share of it, memory.

Maps Gemma-3-270M's 262,144-token vocabulary onto SmolLM2-135M's 49,152 (the
direction a Gemma-3 source fusing into a SmolLM2 target needs) with no cache, and
prints the whole map's time, the MinED search's part of it (the exact passes
come first), the number of Levenshtein pairs it computes, the cost per pair, and
the process's peak RSS.  Needs the two GGUF packages (see docs/real-models.md).

Run: ``python bench/vocab_map.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _folders() -> dict[str, Path]:
    from fusekit.io.gguf import cached_folder
    from fusekit.sources import cache_root
    from tests.real.conftest import gemma3_file, smollm2_file

    return {
        "smollm2": cached_folder(smollm2_file()),
        "gemma3": cached_folder(gemma3_file(cache_root())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fusekit.io.loading import load_tokenizer
    from fusekit.strategies.fusellm import vocab

    folders = _folders()
    source, target = load_tokenizer(folders["gemma3"]), load_tokenizer(folders["smollm2"])
    calls: list[tuple[list[str], list[str]]] = []
    original = vocab._min_edit

    def recording(queries: list[str], choices: list[str], block: int = 2048) -> Any:
        clock = time.perf_counter()
        result = original(queries, choices, block)
        calls.append((queries, choices, time.perf_counter() - clock))
        return result

    vocab._min_edit = recording
    clock = time.perf_counter()
    mapped = vocab.compute_vocab_map(source, target)
    seconds = time.perf_counter() - clock
    vocab._min_edit = original
    queries, choices, mined = calls[0]
    pairs = len(queries) * len(choices)
    stats = vocab.mapping_stats(mapped, source, target)
    print(f"threads {args.threads}; {len(source)} -> {len(target)} tokens; "
          f"{len(queries)} left for MinED after the exact passes")  # fmt: skip
    print(f"vocabulary map:  {seconds:6.1f} s  (exact {stats['exact']:.3f}, nearest "
          f"{stats['nearest']:.3f}, unmapped {stats['unmapped']:.3f})")  # fmt: skip
    print(f"MinED search:    {mined:6.1f} s  {pairs:.2e} Levenshtein pairs, "
          f"{1e9 * mined / pairs:.1f} ns a pair")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()

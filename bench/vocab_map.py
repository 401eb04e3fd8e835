"""FuseLLM's MinED vocabulary map on real vocabularies: time, share of it, memory.

Maps Gemma-3-270M's 262,144-token vocabulary onto SmolLM2-135M's 49,152 (the
direction a Gemma-3 source fusing into a SmolLM2 target needs) with no cache, and
prints the whole map's time (the two token tables included: what a first map
of a tokenizer pair pays), the MinED search's part of it (the exact passes come
first), the number of Levenshtein pairs it computes, and the process's peak RSS.
Needs the two GGUF packages (see docs/real-models.md).

Run: ``python bench/vocab_map.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch
from real_models import folders as real_folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from fusekit.io.loading import load_tokenizer
    from fusekit.strategies.fusellm import vocab

    folders = real_folders()
    source, target = load_tokenizer(folders["gemma3"]), load_tokenizer(folders["smollm2"])
    stats: dict[str, int] = {}  # of the first call: the ordinary tokens (specials come after)
    calls: list[float] = []
    original = vocab.nearest

    def recording(queries: list[str], choices: list[str], workers: int = 1, **_: Any) -> Any:
        if calls:
            return original(queries, choices, workers=workers)
        clock = time.perf_counter()
        stats.update(queries=len(queries), choices=len(choices))
        result = original(queries, choices, workers=workers, stats=stats)
        calls.append(time.perf_counter() - clock)
        return result

    vocab.nearest = recording
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clock = time.perf_counter()
    vocab.token_table(source), vocab.token_table(target)  # what any map of the pair needs
    tables = time.perf_counter() - clock
    mapped = vocab.compute_vocab_map(source, target)
    seconds = time.perf_counter() - clock
    vocab.nearest = original
    full = stats["queries"] * stats["choices"]
    mined = calls[0]
    stats_map = vocab.mapping_stats(mapped, source, target)
    print(f"threads {args.threads}; {len(source)} -> {len(target)} tokens; "
          f"{stats['queries']} left for MinED after the exact passes")  # fmt: skip
    print(f"vocabulary map:  {seconds:6.1f} s  (token tables {tables:.1f} s; exact {stats_map['exact']:.3f}, nearest "
          f"{stats_map['nearest']:.3f}, unmapped {stats_map['unmapped']:.3f})")  # fmt: skip
    print(f"MinED search:    {mined:6.1f} s  {stats['pairs']:.2e} Levenshtein pairs computed "
          f"of {full:.2e} ({stats['pairs'] / full:.1%}; {stats['groups']} query groups)")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB; {loaded:.0f} MB with the two tokenizers loaded, before "
          f"the map")  # fmt: skip


if __name__ == "__main__":
    main()

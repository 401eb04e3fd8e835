"""The CALM quick-start over composition seeds and thread counts, through ``fusekit.api.run``.

Each (threads, seed) pair is one run (``--set`` overrides apply to every run and name
its folder) of ``recipes/quickstart/calm-kv-arithmetic.yaml``
with ``train.seed`` overridden, in its own process so that the thread count applies to
everything it trains.  The bases are cached per thread count (their specs are the same,
but a different thread count trains different bases, so each count gets its own cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "recipes/quickstart/calm-kv-arithmetic.yaml"
HELD_OUT = "kv_arithmetic:held_out:heldout"


def run_one(threads: int, seed: int, root: Path, overrides: list[str]) -> dict:
    tag = hashlib.sha256(json.dumps(overrides).encode()).hexdigest()[:8] if overrides else "recipe"
    out = root / f"{tag}-threads{threads}-seed{seed}"
    if not (out / "fusekit.json").is_file():
        cache = root / f"cache-threads{threads}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "FUSEKIT_CACHE": str(cache)}
        cmd = [sys.executable, "-m", "fusekit", "run", str(RECIPE), "-o", str(out),
               "--set", f"train.seed={seed}"]  # fmt: skip
        for assignment in overrides:
            cmd += ["--set", assignment]
        subprocess.run(cmd, env=env, check=True)
    return json.loads((out / "fusekit.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--root", type=Path, default=Path("runs/calm-sweep"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override for every run, e.g. train.steps=3000")  # fmt: skip
    args = parser.parse_args()
    for threads in args.threads:
        held_out = []
        for seed in args.seeds:
            record = run_one(threads, seed, args.root, args.overrides)
            print(f"threads {threads}, seed {seed}\n{record['tables']}\n")
            held_out.append(100 * record["details"]["eval"][HELD_OUT]["calm"])
        spread = statistics.pstdev(held_out) if len(held_out) > 1 else 0.0
        print(f"threads {threads}: CALM on held-out keys {statistics.mean(held_out):.1f} "
              f"± {spread:.1f} % over seeds {args.seeds} ({', '.join(f'{v:.1f}' for v in held_out)})")  # fmt: skip


if __name__ == "__main__":
    main()

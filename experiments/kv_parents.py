"""What each model knows before CALM composes them: key-value sets in the text style.

Scores models (folders) by greedy exact match on the held-out sets of a key-value
table in the text style (``fusekit.tasks.kv``): numeric arithmetic (the anchor's own
skill, few-shot), KV arithmetic over the held-out keys (what the composition must
reach), and the augment's own tasks, substitution and lookup over every key.  The
table is the one ``recipes/real/smollm2-kv-table.yaml`` teaches and
``recipes/real/calm-kv-gemma3-smollm2.yaml`` composes.

    OMP_NUM_THREADS=1 python experiments/kv_parents.py models/gemma3-270m \\
        models/smollm2-135m out/real/smollm2-kv-table --n 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fusekit.evaluation.sets import evaluate_sets
from fusekit.recipe.common import TaskData

#: The table of the real recipes: 100 keys, two operands, two demonstrations.
KV = {"style": "text", "shots": 2, "num_keys": 100, "min_operands": 2, "max_operands": 2}
SETS = (
    ("numeric arithmetic", "numeric_arithmetic", "all"),
    ("KV arithmetic, held-out keys", "kv_arithmetic", "held_out"),
    ("KV substitution, every key", "kv_substitution", "all"),
    ("KV lookup, every key", "kv_lookup", "all"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=200, help="examples per set")
    args = parser.parse_args()
    refs = [TaskData(task=task, split="heldout", keys=keys, n=args.n, kv=KV)
            for _, task, keys in SETS]  # fmt: skip
    print("| model | " + " | ".join(name for name, _, _ in SETS) + " |")
    print("|---|" + "---:|" * len(SETS))
    for model in args.models:
        scores = [r["value"] for r in evaluate_sets(model, refs)]
        cells = " | ".join(f"{100 * s:.1f}" for s in scores)
        print(f"| {model.name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()

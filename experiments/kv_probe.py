"""Which layers of the real key-table augment hold a key's value, for held-out keys.

CALM passes on only what its paired augment layers hold at the positions the anchor
reads; for key-value arithmetic that is each key's value at the token that ends the
key. A ridge probe per layer (``fusekit.strategies.calm.probe``), fitted on the
held-in keys and scored on the held-out ones, says which layers hold it in a form
shared by all keys, under the plain split of the keys and under the split balanced
by value (``kv.balanced_split``), whose held-in keys show every value.  Below the
table, what the augment's own output head says at the same tokens (its top digit,
nothing fitted): how plainly the value is the next thing it would write there.

    OMP_NUM_THREADS=2 python experiments/kv_probe.py out/real/smollm2-kv-table
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from fusekit.strategies.calm.probe import head_reads_values, probe_kv_augment

#: The table of the real recipes: 100 keys, two operands, two demonstrations.
KV = {"style": "text", "shots": 2, "num_keys": 100, "min_operands": 2, "max_operands": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--n", type=int, default=1000, help="prompts (two keys each)")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    splits = {"plain": False, "balanced": True}
    rows = {
        name: probe_kv_augment(model, tokenizer, {**KV, "balanced_split": b}, n=args.n)
        for name, b in splits.items()
    }
    head = " | ".join(f"{name} split, held-in | {name} split, held-out" for name in splits)
    print(f"| layer | {head} |")
    print("|---:|" + "---:|" * 2 * len(splits))
    for i, row in enumerate(rows["plain"]):
        cells = " | ".join(
            f"{100 * rows[name][i]['held_in']:.1f} | {100 * rows[name][i]['held_out']:.1f}"
            for name in splits
        )
        layer = "embed" if row["layer"] < 0 else str(row["layer"])
        print(f"| {layer} | {cells} |", flush=True)
    for name, balanced in splits.items():
        head = head_reads_values(model, tokenizer, {**KV, "balanced_split": balanced}, n=args.n)
        print(
            f"own output head, top digit at the key's last token ({name} split): "
            f"held-in {100 * head['held_in']:.1f} %, held-out {100 * head['held_out']:.1f} %"
        )


if __name__ == "__main__":
    main()

"""Which layers of a real key-table augment hold a key's value, for held-out keys.

CALM passes on only what its paired augment layers hold at the positions the anchor
reads; for key-value arithmetic that is each key's value at the token that ends the
key. A ridge probe per layer (``fusekit.strategies.calm.probe``), fitted on the
held-in keys and scored on the held-out ones, says which layers hold it in a form
shared by all keys, under the plain split of the keys and under the split balanced
by value (``kv.balanced_split``), whose held-in keys show every value.  Below the
table, what the augment's own output head says at the same tokens (its top digit,
nothing fitted): how plainly the value is the next thing it would write there.
The table is the one the augment was trained on, read from its ``fusekit.json``;
one pass over the prompts serves both splits and both read-outs.

    OMP_NUM_THREADS=2 python experiments/kv_probe.py out/real/smollm2-kv-tag
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, AutoTokenizer

from fusekit.strategies.calm.probe import head_reads, probe_reads, read_keys


def trained_table(model: Path) -> dict[str, Any]:
    """The ``kv`` block of the first KV training set in the model's run record."""
    record = model / "fusekit.json"
    if not record.is_file():
        raise SystemExit(f"{record} is missing: probe a model that fusekit trained on a KV task")
    for entry in json.loads(record.read_text())["recipe"]["data"]["train"]:
        if isinstance(entry, dict) and "kv" in entry:
            return dict(entry["kv"])
    raise SystemExit(f"{record}: no training set with a kv table; train on a KV task first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--n", type=int, default=1000, help="prompts (two keys each)")
    args = parser.parse_args()
    kv = trained_table(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    reads = read_keys(model, tokenizer, kv, n=args.n, head=True)
    splits = {
        name: {**kv, "balanced_split": b} for name, b in (("plain", False), ("balanced", True))
    }
    rows = {name: probe_reads(reads, split) for name, split in splits.items()}
    head = " | ".join(f"{name} split, held-in | {name} split, held-out" for name in splits)
    print(f"| layer | {head} |")
    print("|---:|" + "---:|" * 2 * len(splits))
    for i, row in enumerate(rows["plain"]):
        cells = " | ".join(
            f"{100 * rows[name][i]['held_in']:.1f} | {100 * rows[name][i]['held_out']:.1f}"
            for name in splits
        )
        layer = "embed" if row["layer"] < 0 else str(row["layer"])
        print(f"| {layer} | {cells} |")
    for name, split in splits.items():
        score = head_reads(reads, split)
        print(
            f"own output head, top digit at the key's last token ({name} split): "
            f"held-in {100 * score['held_in']:.1f} %, held-out {100 * score['held_out']:.1f} %"
        )


if __name__ == "__main__":
    main()

"""The FuseLLM quick-start under each alignment, through ``fusekit.compare``.

For each ``align`` value the compare file runs with that value set for every FuseLLM
run (CLM-only runs do not align and are shared through compare's cache); the script
prints the bits-per-byte table and, per source, the share of target positions aligned
and of top-k candidates kept (from each run's ``fusekit.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COMPARE = Path(__file__).resolve().parent.parent / "recipes/quickstart/fusellm-two-domains.yaml"


def main() -> None:
    import fusekit
    from fusekit.comparison.recipe import load_compare

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--align", nargs="+", default=["offsets", "mined", "em"])
    parser.add_argument("--root", type=Path, default=Path("runs/fusellm-align"))
    args = parser.parse_args()
    for align in args.align:
        spec = load_compare(COMPARE, [f"output={args.root / align}"])
        for run in spec.runs:
            if run.recipe.get("strategy") == "fusellm":
                run.recipe["align"] = align
        table = fusekit.compare(spec)
        print(f"## align: {align}\n\n{table.to_markdown()}\n")
        for name, info in table.runs.items():
            record = Path(info["path"]) / "fusekit.json"
            if info.get("strategy") != "fusellm" or not record.is_file():
                continue
            meta = json.loads(record.read_text())
            kept = meta["training"]["extra"]["fusion"].get("kept", [])
            for i, source in enumerate(meta["details"]["sources"]):
                share = f"{kept[i]:.3f}" if i < len(kept) else "n/a"
                print(f"{name}: source {i}: {source['aligned_positions']:.3f} of positions "
                      f"aligned, {share} of top-k candidates kept")  # fmt: skip


if __name__ == "__main__":
    main()

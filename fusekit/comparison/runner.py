"""Side-by-side comparison: run what is not cached, score everything on the same sets.

Each run's output folder is keyed by a hash of its full recipe, so a second
``fusekit compare`` reuses finished runs and cached scores and takes seconds; a
changed knob re-runs only that run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.comparison.recipe import CompareSpec, deep_merge, load_compare
from fusekit.estimates import model_facts
from fusekit.evaluation.report import markdown_table
from fusekit.evaluation.sets import evaluate_sets
from fusekit.io.hashing import folder_hash
from fusekit.models.resolve import resolve_model
from fusekit.pipeline.plan import plan as plan_recipe
from fusekit.pipeline.run import run as run_recipe
from fusekit.recipe.common import DataRef, data_label
from fusekit.version import __version__

LOWER_IS_BETTER = {"bpb", "perplexity"}


@dataclass
class ComparisonTable:
    """Scores per model per evaluation set, plus what produced them."""

    name: str
    results: list[dict[str, Any]]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def models(self) -> list[str]:
        return list(dict.fromkeys(r["model_name"] for r in self.results))

    def value(self, model: str, data: str) -> float | None:
        for r in self.results:
            if r["model_name"] == model and r["data"] == data:
                return float(r["value"])
        return None

    def to_markdown(self) -> str:

        return markdown_table(self.results, layout="wide")

    def to_json(self) -> str:
        payload = {
            "name": self.name,
            "versions": _versions(),
            "results": self.results,
            "runs": self.runs,
        }
        return json.dumps(payload, indent=2, default=str)

    def best(self, metric: str, data: str | None = None) -> str:
        """Name of the best model on ``metric`` (averaged over sets unless ``data`` is given)."""
        scores: dict[str, list[float]] = {}
        for r in self.results:
            if r["metric"] == metric and (data is None or r["data"] == data):
                scores.setdefault(r["model_name"], []).append(float(r["value"]))
        if not scores:
            raise KeyError(f"no results for metric {metric!r}")
        mean = {m: sum(v) / len(v) for m, v in scores.items()}
        pick = min if metric in LOWER_IS_BETTER else max
        return pick(mean, key=mean.__getitem__)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("fusekit", "torch", "transformers", "peft", "accelerate"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _key(recipe: dict[str, Any]) -> str:

    text = json.dumps({"v": __version__, "recipe": recipe}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _scores(root: Path, model_dir: Path, name: str, spec: CompareSpec) -> list[dict[str, Any]]:
    """Evaluate (or read cached scores of) one model on every eval set.

    Scores are cached in the compare output folder, keyed by the model's content hash
    and the eval sets, never inside the model folder: inputs are not written to.
    """
    from pydantic import TypeAdapter

    eval_json = TypeAdapter(list[DataRef]).dump_python(spec.eval, mode="json")
    key = _key({"eval": eval_json, "model": folder_hash(model_dir)})
    cache = root / "scores" / f"{key}.json"
    if cache.is_file():
        results = json.loads(cache.read_text())
    else:
        log.info(f"fusekit: evaluating {name}")
        results = evaluate_sets(model_dir, list(spec.eval))
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(results, indent=2, default=str))
    for result, ref in zip(results, spec.eval, strict=True):
        result["model_name"] = name
        result["data"] = data_label(ref)
    return results


def plan_compare(
    spec: CompareSpec | str | Path, *, overrides: list[str] | None = None
) -> dict[str, Any]:
    """What ``compare`` would do (``--dry-run``): each run's plan, whether its output is
    already cached (then it is only scored), and the parents; trains and writes nothing."""

    if not isinstance(spec, CompareSpec):
        spec = load_compare(spec, overrides)
    root = Path(spec.output)
    runs = []
    for run in spec.runs:
        recipe = deep_merge(spec.base, run.recipe)
        out = root / "runs" / f"{run.name}-{_key(recipe)}"
        runs.append(
            {
                "name": run.name,
                "output": str(out),
                "cached": (out / "fusekit.json").is_file(),
                "plan": plan_recipe(recipe),
            }
        )
    return {
        "name": spec.name,
        "output": str(root),
        "parents": {p.name: model_facts(p.model).as_dict() for p in spec.parents},
        "runs": runs,
        "eval": [data_label(ref) for ref in spec.eval],
    }


def compare(
    spec: CompareSpec | str | Path, *, overrides: list[str] | None = None
) -> ComparisonTable:
    """Run a compare file (path or ``CompareSpec``); write table, JSON and chart; return the table."""

    if not isinstance(spec, CompareSpec):
        spec = load_compare(spec, overrides)
    root = Path(spec.output)
    (root / "runs").mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    runs: dict[str, dict[str, Any]] = {}
    for parent in spec.parents:
        folder = resolve_model(parent.model)
        runs[parent.name] = {"kind": "parent", "path": str(folder)}
        results += _scores(root, folder, parent.name, spec)
    for run in spec.runs:
        recipe = deep_merge(spec.base, run.recipe)
        out = root / "runs" / f"{run.name}-{_key(recipe)}"
        if not (out / "fusekit.json").is_file():
            log.info(f"fusekit: running {run.name}")
            run_recipe(recipe, output=out, overwrite=True)
        meta = json.loads((out / "fusekit.json").read_text())
        runs[run.name] = {"kind": "run", "path": str(out), "strategy": recipe["strategy"],
                          "training": meta.get("training")}  # fmt: skip
        results += _scores(root, out, run.name, spec)
    table = ComparisonTable(spec.name, results, runs)
    (root / "results.md").write_text(table.to_markdown() + "\n")
    (root / "results.json").write_text(table.to_json() + "\n")
    try:
        from fusekit.comparison.plot import plot

        plot(table, spec, root / "results.png")
    except ImportError:
        log.warning("fusekit: install matplotlib (fusekit[plot]) for the chart")
    return table

"""Side-by-side comparison: run what is not cached, score everything on the same sets.

Each run's output folder is keyed by a hash of its full recipe, so a second
``fusekit compare`` reuses finished runs and cached scores and takes seconds; a
changed knob re-runs only that run, and so does a changed input (a run's recorded
model and data hashes are checked before it is reused; scores are keyed by the eval
files' content).  A run's saved baselines (CALM's LoRA of the anchor) are scored on
the same sets beside it, as ``<run> · <baseline>``: the control the claim is made
against belongs in the same table.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.comparison.recipe import CompareSpec, deep_merge, load_compare
from fusekit.errors import listing
from fusekit.estimates import model_facts
from fusekit.evaluation.report import markdown_table
from fusekit.evaluation.sets import evaluate_sets
from fusekit.io.hashing import data_hash, file_hash, folder_hash
from fusekit.models.resolve import resolve_model
from fusekit.pipeline.checks import file_data
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

    def curves(self) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """Held-out scores by step (runs with ``train.eval_steps``): set -> run -> points."""
        out: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for name, run in self.runs.items():
            for point in (run.get("training") or {}).get("eval_curve") or []:
                for data, value in point.items():
                    if data != "step":
                        out.setdefault(data, {}).setdefault(name, []).append(
                            (int(point["step"]), float(value))
                        )
        return out

    def to_markdown(self) -> str:
        """The scores table, then one table per eval set of the held-out curves, if any."""
        parts = [markdown_table(self.results, layout="wide")]
        for data, runs in self.curves().items():
            steps = sorted({s for points in runs.values() for s, _ in points})
            rows = [f"| step | {' | '.join(runs)} |", "|---:" * (len(runs) + 1) + "|"]
            for step in steps:
                cells = [next((f"{v:.4f}" for s, v in p if s == step), "–") for p in runs.values()]
                rows.append(f"| {step} | {' | '.join(cells)} |")
            parts.append(f"Held-out {data} during training:\n\n" + "\n".join(rows))
        return "\n\n".join(parts)

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


def _changed_inputs(meta: dict[str, Any]) -> list[str]:
    """The inputs of a cached run (models, data files, a template file, the evaluation
    files of its held-out curve) whose content is no longer what the run recorded in its
    ``fusekit.json``: the run is keyed by its recipe, which names files by path, so an
    edited data file would otherwise reuse a model trained on the old one.  A model
    converted from GGUF is checked at its ``.gguf`` file: the conversion of the old file
    stays in the cache, unchanged, after the file is replaced."""
    changed = []
    for kind, hasher in (("inputs", folder_hash), ("data", data_hash), ("curve_data", data_hash)):
        for name, record in (meta.get(kind) or {}).items():
            path = Path(record["path"])
            if not path.exists() or hasher(path) != record["hash"]:
                changed.append(f"{name} ({path})")
                continue
            gguf = record.get("converted_from") or {}
            if gguf.get("gguf_file") and gguf.get("sha256"):
                file = Path(gguf["gguf_file"])
                if not file.is_file() or _gguf_hash(file) != gguf["sha256"]:
                    changed.append(f"{name} ({file})")
    return changed


def _gguf_hash(file: Path) -> str:
    """A ``.gguf`` file's hash, read once per size and modification time: every cached run
    of a compare names the same few files, each of them hundreds of megabytes."""
    stat = file.stat()
    return _hash_of(str(file), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _hash_of(path: str, size: int, mtime_ns: int) -> str:
    return file_hash(Path(path))


def _cached(out: Path) -> tuple[bool, list[str]]:
    """Whether the run in ``out`` can be reused, and the inputs that changed since it ran."""
    record = out / "fusekit.json"
    if not record.is_file():
        return False, []
    changed = _changed_inputs(json.loads(record.read_text()))
    return not changed, changed


def _scores(root: Path, model_dir: Path, name: str, spec: CompareSpec) -> list[dict[str, Any]]:
    """Evaluate (or read cached scores of) one model on every eval set.

    Scores are cached in the compare output folder, keyed by the model's content hash
    and the eval sets, with each eval file's content hash (an edited file is scored
    again), never inside the model folder: inputs are not written to.
    """
    from pydantic import TypeAdapter

    eval_json = TypeAdapter(list[DataRef]).dump_python(spec.eval, mode="json")
    files = [data_hash(r.path) for ref in spec.eval for r in file_data(ref)]
    key = _key({"eval": eval_json, "files": files, "model": folder_hash(model_dir)})
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
                "cached": _cached(out)[0],
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
        cached, changed = _cached(out)
        if changed:
            log.info(
                f"fusekit: {run.name}: {listing(changed)} changed since it ran; running it again"
            )
        if not cached:
            log.info(f"fusekit: running {run.name}")
            run_recipe(recipe, output=out, overwrite=True)
        meta = json.loads((out / "fusekit.json").read_text())
        runs[run.name] = {"kind": "run", "path": str(out), "strategy": recipe["strategy"],
                          "training": meta.get("training")}  # fmt: skip
        results += _scores(root, out, run.name, spec)
        for unit, record in (meta.get("baselines") or {}).items():
            folder = out / "baselines" / unit
            if not folder.is_dir():  # a control kept inside the run (random augment, encoder)
                continue
            label = f"{run.name} · {unit}"
            runs[label] = {"kind": "baseline", "path": str(folder), "of": run.name,
                           "strategy": unit, "training": record}  # fmt: skip
            results += _scores(root, folder, label, spec)
    table = ComparisonTable(spec.name, results, runs)
    (root / "results.md").write_text(table.to_markdown() + "\n")
    (root / "results.json").write_text(table.to_json() + "\n")
    # matplotlib is an optional extra; ask for it by name, so that a broken import
    # inside fusekit itself still fails loudly instead of passing for a missing extra
    if importlib.util.find_spec("matplotlib") is None:
        log.warning("fusekit: install matplotlib (fusekit[plot]) for the chart")
    else:
        from fusekit.comparison.plot import plot

        plot(table, spec, root / "results.png")
    return table

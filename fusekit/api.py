"""The Python API behind the CLI: ``run``, ``build``, ``evaluate``, ``compare``.

``run`` owns what every strategy shares — the atomic output folder, provenance,
the model card — so that a strategy only builds and trains.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fusekit.errors import FusekitError
from fusekit.recipe import load_recipe, recipe_to_dict
from fusekit.registry import list_strategies, strategy_class


def _as_recipe(recipe: Any, overrides: list[str] | None = None) -> Any:
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, overrides)
    if isinstance(recipe, dict):
        from fusekit.recipe import parse_recipe

        return parse_recipe(recipe, overrides=overrides)
    if overrides:
        from fusekit.recipe import parse_recipe

        return parse_recipe(recipe_to_dict(recipe), overrides=overrides)
    return recipe


def local_model_paths(recipe: Any) -> list[Path]:
    """Every local model folder a recipe names (the output may never touch one)."""
    from pydantic import BaseModel

    from fusekit.recipe.common import LocalModel

    found: list[Path] = []

    def walk(node: Any) -> None:
        if isinstance(node, LocalModel):
            found.append(Path(node.path))
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)

    walk(recipe)
    return found


def plan(recipe: Any, overrides: list[str] | None = None) -> dict[str, Any]:
    """What ``run`` would do (``--dry-run``): reads no weights, writes nothing."""
    recipe = _as_recipe(recipe, overrides)
    return {"strategy": recipe.strategy, **strategy_class(recipe.strategy)(recipe).plan()}


def run(
    recipe: Any,
    *,
    output: str | Path | None = None,
    overwrite: bool | None = None,
    overrides: list[str] | None = None,
    accelerate_config: str | Path | None = None,
) -> dict[str, Any]:
    """Build (and train) what the recipe describes into its output folder; return the summary."""
    from fusekit.io.output import atomic_output
    from fusekit.io.provenance import write_model_card, write_provenance

    recipe = _as_recipe(recipe, overrides)
    out = output or recipe.output
    if not out:
        raise FusekitError("no output folder: give -o OUT or set output: in the recipe")
    out = Path(out)
    if accelerate_config:
        os.environ["FUSEKIT_ACCELERATE_CONFIG"] = str(Path(accelerate_config).resolve())
    strategy = strategy_class(recipe.strategy)(recipe)
    strategy.checkpoint_dir = out.parent / f".{out.name}.checkpoints"
    start = time.perf_counter()
    overwrite = recipe.overwrite if overwrite is None else overwrite
    with atomic_output(out, overwrite=overwrite, inputs=local_model_paths(recipe)) as tmp:
        summary = strategy.run(Path(tmp))
        if recipe.eval_data() and "evaluation" not in summary:
            summary["evaluation"] = evaluate_sets(Path(tmp), recipe.eval_data())
        inputs = {k: Path(v) for k, v in summary.pop("inputs", {}).items()}
        the_plan = summary.pop("plan", None) or strategy.plan()
        summary["seconds"] = round(time.perf_counter() - start, 2)
        write_provenance(
            tmp,
            strategy=recipe.strategy,
            recipe=recipe_to_dict(recipe),
            plan=the_plan,
            inputs=inputs,
            summary=summary,
        )
        write_model_card(
            tmp,
            title=f"{out.name} ({recipe.strategy})",
            body=_card_body(recipe, summary),
            base_models=[str(p) for p in inputs.values()],
        )
    shutil.rmtree(strategy.checkpoint_dir, ignore_errors=True)
    print(f"fusekit: wrote {out}", file=sys.stderr)
    return {"output": str(out), "strategy": recipe.strategy, **summary}


def default_metric(records: list[dict[str, Any]]) -> str:
    """Exact match for prompt/completion data, bits per byte for text."""
    return "exact_match" if records and "completion" in records[0] else "bpb"


def evaluate_sets(model: Any, eval_refs: list[Any]) -> list[dict[str, Any]]:
    """Score one model on each evaluation set of a recipe, with each set's natural metric."""
    from fusekit.recipe.common import data_label
    from fusekit.training.data import load_records

    results = []
    for ref in eval_refs:
        records = load_records(ref)
        result = evaluate(model, records, default_metric(records), progress=False)
        result["data"] = data_label(ref)
        results.append(result)
    return results


def build(recipe: Any, *, output: str | Path | None = None, overwrite: bool | None = None) -> Any:
    """Build without training (``train.steps: 0``): e.g. a CALM composition at initialisation."""
    recipe = _as_recipe(recipe)
    if recipe.train is not None:
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"steps": 0})})
    return run(recipe, output=output, overwrite=overwrite)


def _card_body(recipe: Any, summary: dict[str, Any]) -> str:
    desc = list_strategies().get(recipe.strategy, recipe.strategy)
    lines = [f"Made with fusekit's `{recipe.strategy}` strategy: {desc}.", ""]
    if recipe.description:
        lines += [recipe.description, ""]
    keep = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and k != "seconds"}
    if keep:
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in keep.items()]
        lines.append("")
    lines.append("The full recipe, plan and input hashes are in `fusekit.json`.")
    return "\n".join(lines)


def evaluate(path_or_model: Any, data: Any, metric: str = "bpb", **kwargs: Any) -> dict[str, Any]:
    """Score a model folder, a CALM composition folder or an in-memory model on data."""
    from fusekit.evaluation.harness import evaluate as _evaluate

    return _evaluate(path_or_model, data, metric, **kwargs)


def load_composed(path: str | Path, **kwargs: Any) -> Any:
    """Re-attach a saved CALM composition to its (hash-checked) base models."""
    from fusekit.strategies.calm.io import load_composed as _load

    return _load(path, **kwargs)

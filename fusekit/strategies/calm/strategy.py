"""The ``calm`` strategy: compose, train Θ_C, save it, score it against its parents.

The output folder holds the composition (``composition.safetensors`` +
``composition.json``), never a copy of a base.  Evaluation scores the
composition, the anchor alone, each augment alone and every requested baseline
on each ``data.eval`` set (exact match for prompt/completion data, bits per
byte for text), so the summary is the paper's table for the user's own data.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from fusekit.errors import PlanError
from fusekit.strategies.base import Strategy

#: Below this held-out probe accuracy, a KV augment's paired layers draw a warning.
PROBE_WARNING = 0.9


def _scratch_spec(ref: Any) -> Any:
    return getattr(ref, "from_scratch", None)


def _config_of(ref: Any) -> dict[str, Any]:
    """A config dict for planning: read from the folder, or taken from a from-scratch spec."""
    import json

    spec = _scratch_spec(ref)
    if spec is not None:
        return {
            "hidden_size": spec.hidden_size,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
        }
    path = Path(getattr(ref, "path", ref)) / "config.json"
    return json.loads(path.read_text())


def mix_anchor_task(recipe: Any, records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """D_C plus ``anchor_mix`` (a share of the result) examples of the anchor's own task.

    Without them nothing in D_C teaches the composition to stay out of the way
    on inputs the anchor already handles (the prototype's anchor lost its plain
    arithmetic); the anchor's task must be known, i.e. a from-scratch anchor.
    """
    mix = float(getattr(recipe, "anchor_mix", 0.0) or 0.0)
    if mix <= 0:
        return records
    spec = _scratch_spec(recipe.anchor)
    if spec is None:
        raise PlanError(
            "anchor_mix needs to know the anchor's task: use an anchor built from_scratch, "
            "or add the anchor-task examples to data.train yourself and set anchor_mix: 0"
        )
    from fusekit.tasks import task_examples

    n = max(1, round(len(records) * mix / (1.0 - mix)))
    extra = task_examples(spec.task, n=n, seed=seed + 7919, kv=spec.kv)
    import random

    mixed = list(records) + list(extra)
    random.Random(seed).shuffle(mixed)
    return mixed


def probe_kv_augments(recipe: Any, model: Any) -> dict[str, Any]:
    """Per from-scratch KV augment: how well each of its layers holds a key's value at the key.

    CALM reads the augment only where its mask lets it (with ``mask: diagonal``, at
    the key itself), so a composition trained on held-in keys can reach held-out
    keys only through layers that store the value there, in a form shared by all
    keys.  A ridge probe fitted on held-in keys and scored on held-out ones says
    which layers do (SPEC §1 "risk"); a warning names the case where none of the
    paired layers does, before any training time is spent on it.
    """
    from fusekit.strategies.calm.probe import probe_kv_augment
    from fusekit.tasks import KV_TASKS

    report: dict[str, Any] = {}
    for k, ref in enumerate(recipe.augment):
        spec = _scratch_spec(ref)
        if spec is None or spec.task not in KV_TASKS or model.augment_tokenizers[k] is None:
            continue
        rows = probe_kv_augment(model.augments[k], model.augment_tokenizers[k], spec.kv)
        held_out = {row["layer"]: row["held_out"] for row in rows}
        paired = sorted({int(a) for a, _ in model.composition_config.augments[k].pairs})
        best = max(held_out[layer] for layer in paired)
        report[f"augment_{k}"] = {"layers": rows, "paired": paired, "best_paired": best}
        shown = ", ".join(f"{layer}: {100 * held_out[layer]:.0f}%" for layer in paired)
        print(
            f"fusekit: augment_{k} holds held-out keys' values (probe) at {shown}", file=sys.stderr
        )
        if best < PROBE_WARNING:
            top = max(held_out, key=lambda layer: held_out[layer])
            print(
                f"fusekit: warning: augment_{k}'s paired layers hold unseen keys' values at "
                f"{100 * best:.0f}% at best (layer {top} reaches {100 * held_out[top]:.0f}%): "
                "CALM cannot pass on more; pair the layers that probe high, or train the "
                "augment with kv_lookup among its tasks",
                file=sys.stderr,
            )
    return report


def _metric_for(records: list[dict[str, Any]]) -> str:
    return "exact_match" if all("completion" in r for r in records) else "bpb"


def score(model: Any, records: list[dict[str, Any]], tokenizer: Any = None) -> float:
    """Exact match (prompt/completion records) or bits per byte (text) of one model."""
    return float(evaluate_one(model, records, tokenizer)["value"])


def evaluate_one(model: Any, records: list[dict[str, Any]], tokenizer: Any = None) -> dict:
    """The harness's full result (metric, value, counts) for one model on one set."""
    from fusekit.evaluation.harness import evaluate

    return evaluate(
        model, records, _metric_for(records), tokenizer=tokenizer, progress=False, batch_size=64
    )


def chance_level(records: list[dict[str, Any]]) -> float | None:
    """Exact match of always giving the most common answer (None for plain text)."""
    if _metric_for(records) != "exact_match":
        return None
    from fusekit.tasks.kv import majority_baseline

    return majority_baseline(records)


def table_one(table: dict[str, dict[str, float]]) -> str:
    """The paper's Table 1 layout: evaluation sets as rows, models as columns."""
    models: list[str] = []
    for row in table.values():
        models += [m for m in row if m not in models]
    lines = ["| data | " + " | ".join(models) + " |", "|---" + "|---:" * len(models) + "|"]
    for label, row in table.items():
        cells = [_percent(row[m]) if m in row else "–" for m in models]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}" if 0.0 <= value <= 1.0 else f"{value:.4f}"


class CalmStrategy(Strategy):
    tag = "calm"

    def _shape(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "every": getattr(r, "every", 4),
            "pairs": getattr(r, "pairs", None),
            "heads": getattr(r, "heads", None),
            "mask": getattr(r, "mask", "causal"),
            "augment_mode": getattr(r, "augment_mode", "iterative"),
            # beyond the paper (see composition.CrossBlock)
            "kv_norm": bool(getattr(r, "kv_norm", False)),
            "scale_output": bool(getattr(r, "scale_output", False)),
            "null_key": bool(getattr(r, "null_key", False)),
        }

    def plan(self) -> dict[str, Any]:
        from fusekit.strategies.calm.build import composition_config, plan_composition

        refs = [self.recipe.anchor, *self.recipe.augment]
        if all(_scratch_spec(r) is None for r in refs):
            return plan_composition(
                Path(self.recipe.anchor.path),
                [Path(a.path) for a in self.recipe.augment],
                **self._shape(),
            )
        config = composition_config(
            _config_of(self.recipe.anchor),
            [_config_of(a) for a in self.recipe.augment],
            **self._shape(),
        )
        return {
            "pairs": [[list(p) for p in a.pairs] for a in config.augments],
            "heads": config.heads,
            "mask": config.mask,
            "augment_mode": config.augment_mode,
            "composition_parameters": config.parameter_count(),
            "note": "from-scratch bases are trained (and cached) before composing",
        }

    def input_paths(self) -> list[Path]:
        refs = [self.recipe.anchor, *self.recipe.augment]
        return [Path(r.path) for r in refs if _scratch_spec(r) is None and hasattr(r, "path")]

    def run(self, workdir: Path) -> dict[str, Any]:
        from fusekit.recipe.common import data_label
        from fusekit.sources import resolve_models
        from fusekit.strategies.calm.build import compose_from_paths
        from fusekit.strategies.calm.io import save_composition
        from fusekit.strategies.calm.trainer import train_composition
        from fusekit.training.data import load_records

        recipe = self.recipe
        spec = recipe.train
        anchor_path, *augment_paths = resolve_models([recipe.anchor, *recipe.augment])
        model = compose_from_paths(anchor_path, augment_paths, seed=spec.seed, **self._shape())
        probe = probe_kv_augments(recipe, model)
        records = mix_anchor_task(recipe, load_records(recipe.train_data()), spec.seed)
        checkpoints = workdir / ".checkpoints"
        train = train_composition(
            model, records, spec, checkpoints, log_path=workdir / "train_log.jsonl"
        )
        shutil.rmtree(checkpoints, ignore_errors=True)
        save_composition(
            model, workdir, extra={"train": {k: v for k, v in train.items() if k != "loss_curve"}}
        )

        evals = {data_label(ref): load_records(ref) for ref in recipe.eval_data()}
        table: dict[str, dict[str, float]] = {label: {} for label in evals}
        evaluation = []
        for label, recs in evals.items():
            table[label]["anchor"] = score(model.anchor, recs, model.anchor_tokenizer)
            for k, aug in enumerate(model.augments):
                if model.augment_tokenizers[k] is not None:
                    table[label][f"augment_{k}"] = score(aug, recs, model.augment_tokenizers[k])
            result = evaluate_one(model, recs)
            evaluation.append({**result, "data": label})
            table[label]["calm"] = float(result["value"])
        baselines = {
            name: self._baseline(name, model, records, workdir, evals, table)
            for name in getattr(recipe, "baselines", [])
        }
        for label, recs in evals.items():
            chance = chance_level(recs)
            if chance is not None:
                table[label]["chance"] = chance
        inputs = {"anchor": anchor_path, **{f"augment_{k}": p for k, p in enumerate(augment_paths)}}
        return {
            "tables": table_one(table) if table else "",
            "evaluation": evaluation,
            "inputs": inputs,
            "parameters": model.parameter_report(),
            "pairs": [[list(p) for p in a.pairs] for a in model.composition_config.augments],
            "train": train,
            "augment_probe": probe,
            "eval": table,
            "baselines": baselines,
        }

    def _baseline(
        self,
        name: str,
        model: Any,
        records: list[dict[str, Any]],
        workdir: Path,
        evals: dict[str, list[dict[str, Any]]],
        table: dict[str, dict[str, float]],
    ) -> dict[str, Any]:
        from fusekit.strategies.calm.baselines import lora_model, random_like, train_lora
        from fusekit.strategies.calm.build import compose
        from fusekit.strategies.calm.trainer import train_composition

        spec = self.recipe.train
        out = workdir / "baselines" / name
        if name == "lora":
            budget = model.composition.num_parameters()
            peft_model, info = lora_model(model.anchor, budget, seed=spec.seed)
            summary = train_lora(
                peft_model, model.anchor_tokenizer, records, spec, out / ".checkpoints"
            )
            shutil.rmtree(out / ".checkpoints", ignore_errors=True)
            peft_model.save_pretrained(out)
            for label, recs in evals.items():
                table[label][name] = score(peft_model, recs, model.anchor_tokenizer)
            return {**info, **summary}
        shape = {**self._shape(), "pairs": [a.pairs for a in model.composition_config.augments]}
        augments = list(model.augments)
        if name == "random_augment":
            augments = [random_like(a, seed=spec.seed + 1 + k) for k, a in enumerate(augments)]
        elif name == "encoder":
            shape["augment_mode"] = "encoder"
        else:
            raise PlanError(f"unknown baseline {name!r}; choose lora, random_augment or encoder")
        other = compose(
            model.anchor,
            augments,
            anchor_tokenizer=model.anchor_tokenizer,
            augment_tokenizers=model.augment_tokenizers,
            seed=spec.seed,
            **shape,
        )
        summary = train_composition(other, records, spec, out / ".checkpoints")
        shutil.rmtree(out / ".checkpoints", ignore_errors=True)
        for label, recs in evals.items():
            table[label][name] = score(other, recs)
        other.remove_hooks()
        return {"composition_parameters": other.composition.num_parameters(), **summary}

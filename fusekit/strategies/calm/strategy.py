"""The ``calm`` strategy: compose, train Θ_C, save it, score it against its parents.

The output folder holds the composition (``composition.safetensors`` +
``composition.json``), never a copy of a base.  Evaluation scores the
composition, the anchor alone, each augment alone and every requested baseline
on each ``data.eval`` set (exact match for prompt/completion data, bits per
byte for text), so the summary is the paper's table for the user's own data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.errors import PlanError
from fusekit.estimates import FP32, load_bytes, model_facts, training_memory
from fusekit.evaluation.harness import evaluate
from fusekit.models.resolve import model_inputs
from fusekit.recipe.common import ModelRef, ScratchSpec, data_label, own_load
from fusekit.result import StageResult, TrainingRecord
from fusekit.strategies.base import Built, Prepared, Strategy
from fusekit.strategies.calm.io import save_composition
from fusekit.strategies.calm.recipe import CalmRecipe
from fusekit.tasks import KV_TASKS, task_examples
from fusekit.tasks.kv import majority_baseline

#: Below this held-out probe accuracy, a KV augment's paired layers draw a warning.
PROBE_WARNING = 0.9


def _scratch_spec(ref: ModelRef) -> ScratchSpec | None:
    return getattr(ref, "from_scratch", None)


def mix_anchor_task(
    recipe: CalmRecipe, records: list[dict[str, Any]], seed: int
) -> list[dict[str, Any]]:
    """D_C plus ``anchor_mix`` (a share of the result) of the anchor's own domain.

    Without them nothing in D_C teaches the composition to stay out of the way
    on inputs the anchor already handles: the prototype's anchor lost its plain
    arithmetic, and a pretrained anchor trained on one domain's completions alone
    loses bits per byte on its own.  A from-scratch anchor's task
    is known and generated; a pretrained anchor's domain is ``anchor_data``
    (plain text or examples), drawn from without replacement where it suffices.

    The share is of examples for a from-scratch task (its examples have one
    shape) and of characters for ``anchor_data``: text records are cut into
    ``seq_len`` pieces for training, so one long English document next to many
    short code files would be a far larger share of what trains than of the
    records.
    """
    import random

    mix = recipe.anchor_mix
    if mix <= 0:
        return records
    spec = _scratch_spec(recipe.anchor)
    source = getattr(recipe, "anchor_data", None)
    if source is not None:
        from fusekit.data.causal_lm import load_records

        pool = load_records(source)
        if not pool:
            raise PlanError("anchor_data has no records; anchor_mix has nothing to mix in")
        extra = _draw_characters(pool, _chars(records) * mix / (1.0 - mix), seed + 7919)
    elif spec is not None:
        n = max(1, round(len(records) * mix / (1.0 - mix)))
        extra = task_examples(spec.task, n=n, seed=seed + 7919, kv=spec.kv)
    else:
        raise PlanError(
            "anchor_mix needs examples of the anchor's own domain: set anchor_data (plain text "
            "or examples the anchor already handles), or build the anchor from_scratch"
        )
    mixed = list(records) + list(extra)
    random.Random(seed).shuffle(mixed)
    return mixed


def _chars(records: list[dict[str, Any]]) -> int:
    return sum(len(v) for r in records for v in r.values() if isinstance(v, str))


def _draw_characters(pool: list[dict[str, Any]], wanted: float, seed: int) -> list[dict[str, Any]]:
    """Records of ``pool`` in a seeded order until they hold ``wanted`` characters (at
    least one record); without replacement while the pool lasts, with it after."""
    import random

    rng = random.Random(seed)
    order = rng.sample(pool, len(pool))
    drawn: list[dict[str, Any]] = []
    total = 0
    while total < wanted or not drawn:
        record = order[len(drawn)] if len(drawn) < len(order) else rng.choice(pool)
        drawn.append(record)
        total += max(1, _chars([record]))
    return drawn


def probe_kv_augments(recipe: CalmRecipe, model: Any) -> dict[str, Any]:
    """Per from-scratch KV augment: how well each of its layers holds a key's value at the key.

    CALM reads the augment only where its mask lets it (with ``mask: diagonal``, at
    the key itself), so a composition trained on held-in keys can reach held-out
    keys only through layers that store the value there, in a form shared by all
    keys.  A ridge probe fitted on held-in keys and scored on held-out ones says
    which layers do; paired only with layers that do not, a composition can merely
    memorise the held-in keys.  A warning names that case before any training time
    is spent on it.
    """
    from fusekit.strategies.calm.probe import probe_kv_augment

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
        log.info(f"fusekit: augment_{k} holds held-out keys' values (probe) at {shown}")
        if best < PROBE_WARNING:
            top = max(held_out, key=lambda layer: held_out[layer])
            log.warning(
                f"fusekit: warning: augment_{k}'s paired layers hold unseen keys' values at "
                f"{100 * best:.0f}% at best (layer {top} reaches {100 * held_out[top]:.0f}%): "
                "CALM cannot pass on more; pair the layers that probe high, or train the "
                "augment with kv_lookup among its tasks (kv_tag with a real tokenizer)"
            )
    return report


def _metric_for(records: list[dict[str, Any]]) -> str:
    return "exact_match" if all("completion" in r for r in records) else "bpb"


def score(model: Any, records: list[dict[str, Any]], tokenizer: Any = None) -> float:
    """Exact match (prompt/completion records) or bits per byte (text) of one model."""
    return float(evaluate_one(model, records, tokenizer)["value"])


def evaluate_one(model: Any, records: list[dict[str, Any]], tokenizer: Any = None) -> dict:
    """The harness's full result (metric, value, counts) for one model on one set."""

    return evaluate(
        model, records, _metric_for(records), tokenizer=tokenizer, progress=False, batch_size=64
    )


def chance_level(records: list[dict[str, Any]]) -> float | None:
    """Exact match of always giving the most common answer (None for plain text)."""
    if _metric_for(records) != "exact_match":
        return None

    return majority_baseline(records)


def table_one(table: dict[str, dict[str, float]]) -> str:
    """The paper's Table 1 layout: evaluation sets as rows, models as columns."""
    models: list[str] = []
    for row in table.values():
        models += [m for m in row if m not in models]
    lines = ["| data | " + " | ".join(models) + " |", "|---" + "|---:" * len(models) + "|"]
    for label, row in table.items():
        cells = [_percent(row[m]) if m in row else "–" for m in models]
        lines.append(f"| {paper_label(label)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The paper's names for the built-in Table 1 tasks.
_PAPER_TASKS = {
    "kv_substitution": "KV-substitution",
    "numeric_arithmetic": "Numeric-arithmetic",
    "kv_arithmetic": "KV-arithmetic",
}
_PAPER_KEYS = {"held_in": "held-in keys", "held_out": "held-out keys"}


def paper_label(label: str) -> str:
    """``kv_arithmetic:held_out:heldout`` -> ``KV-arithmetic, held-out keys`` (others as given).

    The evaluation records keep the data label; only the printed table reads like the
    paper's, where every set is held out and the split need not be named.
    """
    task, *rest = label.split(":")
    if task not in _PAPER_TASKS or not set(rest) <= {*_PAPER_KEYS, "heldout"}:
        return label
    keys = [_PAPER_KEYS[part] for part in rest if part in _PAPER_KEYS]
    return ", ".join([_PAPER_TASKS[task], *keys])


def _percent(value: float) -> str:
    return f"{100 * value:.1f}" if 0.0 <= value <= 1.0 else f"{value:.4f}"


class CalmStrategy(Strategy[CalmRecipe]):
    """Units: ``calm`` (Θ_C, the output) and each of the recipe's ``baselines``."""

    tag = "calm"
    main_unit = "calm"

    def _shape(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "every": r.every,
            "pairs": r.pairs,
            "heads": r.heads,
            "mask": r.mask,
            "augment_mode": r.augment_mode,
            # beyond the paper (see composition.CrossBlock)
            "kv_norm": r.kv_norm,
            "scale_output": r.scale_output,
            "null_key": r.null_key,
        }

    def plan(self) -> dict[str, Any]:
        from fusekit.strategies.calm.build import composition_config

        r = self.recipe
        anchor = model_facts(r.anchor)
        augments = [model_facts(a) for a in r.augment]
        config = composition_config(
            anchor.config_shape(), [a.config_shape() for a in augments], **self._shape()
        )
        theta = config.parameter_count()
        plan: dict[str, Any] = {
            "anchor": anchor.name,
            "augments": [a.name for a in augments],
            "pairs": [[list(p) for p in a.pairs] for a in config.augments],
            "heads": config.heads,
            "mask": config.mask,
            "augment_mode": config.augment_mode,
            "composition_parameters": theta,
            "anchor_parameters": anchor.parameters,
            "share_of_anchor": theta / anchor.parameters,
            # the output holds only the composition, in fp32; the bases stay where they are
            "disk_bytes": theta * 4,
            "models": {
                "anchor": anchor.as_dict(),
                **{f"augment_{i}": a.as_dict() for i, a in enumerate(augments)},
            },
        }
        if any(m.from_scratch for m in (anchor, *augments)):
            plan["note"] = "from-scratch bases are trained (and cached) before composing"
        if self.has_training():
            plan["trainable_parameters"] = theta
            loads = [r.model_load(own_load(ref), frozen=True) for ref in (r.anchor, *r.augment)]
            held = [(m, load_bytes(load.dtype, m)) for m, load in zip(
                (anchor, *augments), loads, strict=True)]  # fmt: skip
            # the augments run without gradients and stop at their last paired layer,
            # so their logits are never formed; the anchor's activations are kept
            plan["training_memory_bytes"] = training_memory(
                held=held, trainable=theta, backprop=[anchor], forward_only=[], train=r.train,
                attention=loads[0].attn_implementation, extra_weights=FP32 * theta,
                frozen_layers=anchor.layers,
            )  # fmt: skip
        return plan

    def prepare(self, workdir: Path) -> Prepared:
        from fusekit.strategies.calm.build import plan_composition

        anchor, *augments = model_inputs([self.recipe.anchor, *self.recipe.augment])
        inputs = {"anchor": anchor, **{f"augment_{k}": a for k, a in enumerate(augments)}}
        # every base is a folder now (from-scratch ones trained): plan from their configs
        plan = plan_composition(
            Path(anchor.path), [Path(a.path) for a in augments], **self._shape()
        )
        return Prepared(inputs=inputs, plan=plan)

    def units(self, prepared: Prepared) -> list[str]:
        # steps: 0 still saves the composition at initialisation; baselines only train
        return [self.main_unit, *(self.recipe.baselines if self.has_training() else [])]

    # ------------------------------------------------------------------ build

    def _bases(self, prepared: Prepared) -> tuple[Any, list[Any]]:
        anchor = prepared.inputs["anchor"]
        augments = [m for name, m in prepared.inputs.items() if name.startswith("augment_")]
        return anchor, augments

    def _training_data(self) -> Any:
        """D_C as the composition and the LoRA baseline read it: the data reference itself
        (tokenised into the cache a record at a time), or with ``anchor_mix`` the records
        with the anchor's own examples mixed in (read into memory to mix)."""
        from fusekit.data.causal_lm import load_records

        data = self.recipe.train_data()
        if self.recipe.anchor_mix <= 0:
            return data
        return mix_anchor_task(self.recipe, load_records(data), self.recipe.train.seed)

    def build(self, prepared: Prepared, unit: str) -> Built:
        from fusekit.strategies.calm.build import compose_from_paths
        from fusekit.strategies.calm.trainer import (
            CalmTrainer,
            composition_collator,
            composition_dataset,
            is_composition_parameter,
        )

        if unit == "lora":
            return self._build_lora(prepared)
        spec = self.recipe.train
        anchor, augments = self._bases(prepared)
        shape = self._shape()
        shape["pairs"] = prepared.plan["pairs"]
        if unit == "encoder":
            shape["augment_mode"] = "encoder"
        elif unit not in (self.main_unit, "random_augment"):
            raise PlanError(f"unknown baseline {unit!r}; choose lora, random_augment or encoder")
        if unit == "random_augment":
            model = self._random_augment_composition(anchor, augments, shape)
        else:
            model = compose_from_paths(
                anchor, augments, seed=spec.seed, load=self._frozen_load, **shape
            )
        details: dict[str, Any] = {}
        if unit == self.main_unit:
            details = {
                "augment_probe": probe_kv_augments(self.recipe, model),
                "parameters": model.parameter_report(),
                "pairs": prepared.plan["pairs"],
            }
        dataset = collator = None
        if spec.steps != 0:
            data = self.recipe.train_data()
            dataset = composition_dataset(
                model, self._training_data(), spec.seq_len, loss_on=spec.loss_on,
                chat_template=spec.chat_template, anchor=str(anchor.path),
                source=data_label(data) if data is not None else "data",
            )  # fmt: skip
            collator = composition_collator(model)
        return Built(
            model=model,
            dataset=dataset,
            collator=collator,
            trainable=is_composition_parameter,
            trainer_class=CalmTrainer,
            details=details,
        )

    def _frozen_load(self, source: Any) -> dict[str, Any]:
        """``load_base`` options of a frozen base: its own ``load:`` over the recipe's,
        in the training precision by default (``BaseRecipe.model_load``)."""
        return self.recipe.model_load(source.load, frozen=True).loader_kwargs()

    def _random_augment_composition(self, anchor: Any, augments: list[Any], shape: dict) -> Any:
        """The same composition over augments of the same architecture with random weights."""
        from fusekit.strategies.calm.baselines import random_like
        from fusekit.strategies.calm.build import compose, load_base

        seed = self.recipe.train.seed
        anchor_model, anchor_tok = load_base(anchor, **self._frozen_load(anchor))
        loaded = [load_base(a, **self._frozen_load(a)) for a in augments]
        return compose(
            anchor_model,
            [random_like(m, seed=seed + 1 + k) for k, (m, _) in enumerate(loaded)],
            anchor_tokenizer=anchor_tok,
            augment_tokenizers=[t for _, t in loaded],
            seed=seed,
            **shape,
        )

    def _build_lora(self, prepared: Prepared) -> Built:
        from fusekit.data.causal_lm import PadCollator, pad_id
        from fusekit.data.tokenized import tokenized_examples
        from fusekit.strategies.calm.baselines import lora_model
        from fusekit.strategies.calm.build import load_base

        spec = self.recipe.train
        anchor, _ = self._bases(prepared)
        # the anchor trains here (through adapters): fp32 unless its load.dtype says otherwise
        base, tokenizer = load_base(anchor, **self.recipe.model_load(anchor.load).loader_kwargs())
        model, info = lora_model(base, prepared.plan["composition_parameters"], seed=spec.seed)
        return Built(
            model=model,
            dataset=tokenized_examples(
                self._training_data(),
                tokenizer,
                spec.seq_len,
                loss_on=spec.loss_on,
                chat_template=spec.chat_template,
                model=str(anchor.path),
                source=data_label(data) if (data := self.recipe.train_data()) else "data",
            ),
            collator=PadCollator(pad_id(tokenizer)),
            tokenizer=tokenizer,
            trainable=lambda name: "lora_" in name,
            details={"lora": info},
        )

    # ------------------------------------------------------------------ save, evaluate

    def save(self, built: Built, unit: str, workdir: Path) -> None:
        if unit == self.main_unit:
            save_composition(built.model, workdir)
        elif unit == "lora":
            # The adapter names its base as the recipe did; a relative name would only
            # resolve from the folder the run started in, so it is saved absolute.
            for config in built.model.peft_config.values():
                named = Path(str(config.base_model_name_or_path or ""))
                if named.parts and not named.is_absolute() and named.exists():
                    config.base_model_name_or_path = str(named.resolve())
            built.model.save_pretrained(Path(workdir) / "baselines" / unit)

    def evaluate(self, built: Built | None, unit: str, workdir: Path, name: str) -> dict[str, Any]:
        from fusekit.data.causal_lm import load_records

        assert built is not None
        model = built.model
        table: dict[str, dict[str, float]] = {}
        evaluation = []
        for ref in self.recipe.eval_data():
            label, recs = data_label(ref), load_records(ref)
            row = table.setdefault(label, {})
            if unit == "lora":
                row[unit] = score(model, recs, built.tokenizer)
                continue
            if unit == self.main_unit:
                row["anchor"] = score(model.anchor, recs, model.anchor_tokenizer)
                for k, aug in enumerate(model.augments):
                    if model.augment_tokenizers[k] is not None:
                        row[f"augment_{k}"] = score(aug, recs, model.augment_tokenizers[k])
                result = evaluate_one(model, recs)
                evaluation.append({**result, "data": label, "model_name": name, "model": name})
                row[unit] = float(result["value"])
                chance = chance_level(recs)  # of the data alone: once, with the main unit
                if chance is not None:
                    row["chance"] = chance
            else:
                row[unit] = score(model, recs)
        return {"table": table, "evaluation": evaluation}

    def report(
        self,
        prepared: Prepared,
        records: dict[str, TrainingRecord | None],
        scores: dict[str, dict[str, Any]],
        details: dict[str, Any],
    ) -> StageResult:
        table: dict[str, dict[str, float]] = {}
        for unit in records:  # calm first, then the baselines
            for label, row in scores.get(unit, {}).get("table", {}).items():
                table.setdefault(label, {}).update(row)
        for row in table.values():  # chance as the last column
            if "chance" in row:
                row["chance"] = row.pop("chance")
        result = super().report(prepared, records, scores, details)
        result.tables = table_one(table) if table else None
        result.details["eval"] = table
        return result

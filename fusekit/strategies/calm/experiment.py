"""The CPU reproduction of CALM's Table 1 (KV arithmetic), end to end in minutes.

m_A (augment): a tiny Llama trained on KV-substitution over all keys, mixed
with ``kv_lookup`` examples (``augment_lookup``) that make it hold each key's
value at the key's own position — it knows the key→value table.  m_B
(anchor): a tiny Llama trained on numeric arithmetic, optionally plus
``key_exposure`` examples that show it every key token as an operand but never
a value.  CALM composes them and trains Θ_C on KV arithmetic over the 20 %
held-in keys (with ``anchor_mix`` numeric examples so the anchor's own skill
survives); a LoRA of the anchor with the same parameter count trains on the same
data.  Everything is scored by greedy iterative decoding and exact match on
KV-substitution, numeric arithmetic and KV arithmetic over held-in and held-out
keys, next to the majority-answer chance level.

Run: ``python -m fusekit.strategies.calm.experiment --out runs/calm-kv`` (add
``--set field=value`` to change a setting).  Trained bases are cached under
``--bases`` (keyed by their settings), so trying composition settings is cheap.
Training uses plain torch loops: on a CPU, for models this small, the loop's
overhead matters and nothing else here needs ``Trainer``'s machinery.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusekit.strategies.calm.loops import Pool, train_loop

TABLE_TASKS = (
    "kv_substitution",
    "numeric_arithmetic",
    "kv_arithmetic/held_in",
    "kv_arithmetic/held_out",
)


@dataclass
class KVExperiment:
    """Every setting of the reproduction; the defaults are the tuned configuration."""

    num_keys: int = 300
    value_max: int = 9
    held_in_fraction: float = 0.2
    kv_seed: int = 0
    hidden: int = 128
    intermediate: int = 256
    heads: int = 4
    augment_layers: int = 8
    anchor_layers: int = 4
    augment_steps: int = 600
    anchor_steps: int = 1500
    base_lr: float = 3e-3
    augment_weight_decay: float = 0.0
    augment_lookup: float = 0.5
    key_exposure: float = 0.0
    calm_steps: int = 1500
    calm_lr: float = 2e-3
    batch_size: int = 64
    mask: str = "diagonal"
    pairs: list[list[int]] | None = field(default_factory=lambda: [[0, -1], [1, 0], [3, 1], [7, 2]])
    every: int = 4
    calm_heads: int | None = 128
    kv_norm: bool = True
    scale_output: bool = True
    null_key: bool = True
    anchor_mix: float = 0.2
    lora: bool = True
    lora_lr: float | None = None
    n_eval: int = 500
    probe: bool = True
    seed: int = 0
    threads: int | None = 1

    def kv(self) -> Any:
        from fusekit.tasks import KVConfig

        return KVConfig(
            num_keys=self.num_keys,
            value_max=self.value_max,
            held_in_fraction=self.held_in_fraction,
            seed=self.kv_seed,
        )

    def base_key(self, role: str) -> str:
        """Cache key of a trained base: only the settings that shape it."""
        shared = [
            "num_keys",
            "value_max",
            "held_in_fraction",
            "kv_seed",
            "hidden",
            "intermediate",
            "heads",
            "base_lr",
            "batch_size",
            "seed",
        ]
        own = (
            ["augment_layers", "augment_steps"]
            if role == "augment"
            else ["anchor_layers", "anchor_steps", "key_exposure"]
        )
        for extra in ("augment_weight_decay", "augment_lookup"):
            if role == "augment" and getattr(self, extra):
                own.append(extra)  # (absent when 0: older caches stay valid)
        payload = json.dumps({k: getattr(self, k) for k in shared + own}, sort_keys=True)
        return f"{role}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


# --------------------------------------------------------------------------- data


def _examples(task: str, n: int, cfg: Any, keys: str = "all", seed: int = 0) -> list[dict]:
    from fusekit.tasks import kv_examples

    return kv_examples(task, n, cfg=cfg, keys=keys, seed=seed)


def _eval_sets(exp: KVExperiment) -> dict[str, list[dict[str, str]]]:
    from fusekit.tasks import task_examples

    kv = exp.kv()
    n = exp.n_eval
    return {
        "kv_substitution": task_examples("kv_substitution", split="heldout", n=n, kv=kv),
        "numeric_arithmetic": task_examples("numeric_arithmetic", split="heldout", n=n, kv=kv),
        "kv_arithmetic/held_in": task_examples(
            "kv_arithmetic", split="heldout", keys="held_in", n=n, kv=kv
        ),
        "kv_arithmetic/held_out": task_examples(
            "kv_arithmetic", split="heldout", keys="held_out", n=n, kv=kv
        ),
    }


# --------------------------------------------------------------------------- training


def _new_llama(exp: KVExperiment, layers: int, vocab: int, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=exp.hidden,
        intermediate_size=exp.intermediate,
        num_hidden_layers=layers,
        num_attention_heads=exp.heads,
        num_key_value_heads=exp.heads,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def train_base(exp: KVExperiment, role: str, cache: Path) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse from ``cache``) m_A (``augment``) or m_B (``anchor``); returns its folder."""
    from fusekit.tasks import kv_tokenizer

    folder = cache / exp.base_key(role)
    info_file = folder / "train_info.json"
    if info_file.is_file():
        return folder, json.loads(info_file.read_text())
    kv, tok = exp.kv(), kv_tokenizer(exp.kv())
    if role == "augment":
        steps, layers = exp.augment_steps, exp.augment_layers
        n = steps * exp.batch_size
        n_lookup = round(n * exp.augment_lookup)
        records = _examples("kv_substitution", n - n_lookup, kv, seed=exp.seed)
        records += _examples("kv_lookup", n_lookup, kv, seed=exp.seed + 1)
    else:
        steps, layers = exp.anchor_steps, exp.anchor_layers
        n = steps * exp.batch_size
        n_keys = round(n * exp.key_exposure)
        records = _examples("numeric_arithmetic", n - n_keys, kv, seed=exp.seed)
        records += _examples("key_exposure", n_keys, kv, seed=exp.seed + 1)
    torch.manual_seed(exp.seed + (0 if role == "augment" else 1))
    model = _new_llama(exp, layers, len(tok), tok)
    start = time.perf_counter()
    history = train_loop(
        model,
        list(model.parameters()),
        Pool(tok, records),
        steps,
        exp.base_lr,
        exp.batch_size,
        exp.seed,
        f"m_{role}",
        weight_decay=exp.augment_weight_decay if role == "augment" else 0.0,
    )
    info = {
        "role": role,
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "loss_curve": history,
    }
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "train_info.json").write_text(json.dumps(info, indent=1))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder, info


# --------------------------------------------------------------------------- probing


def probe_augment(exp: KVExperiment, augment: Any, tokenizer: Any) -> list[dict[str, Any]]:
    """Linear-probe accuracy of each augment layer for a key's value at the key's position."""
    from fusekit.strategies.calm.probe import probe_kv_augment

    return probe_kv_augment(augment, tokenizer, exp.kv(), seed=exp.seed + 99)


# --------------------------------------------------------------------------- evaluation


def score_all(
    model: Any, tokenizer: Any, sets: dict[str, list[dict[str, str]]]
) -> dict[str, float]:
    """Greedy decoding + exact match (the project's harness) on every evaluation set."""
    from fusekit.evaluation.generation import exact_match

    out = {}
    for name, records in sets.items():
        result = exact_match(
            model,
            [(r["prompt"], r["completion"]) for r in records],
            tokenizer=tokenizer,
            batch_size=250,
            max_new_tokens=8,
        )
        out[name] = round(100 * result.accuracy, 1)
    return out


def chance_levels(sets: dict[str, list[dict[str, str]]]) -> dict[str, float]:
    from fusekit.tasks import majority_baseline

    return {name: round(100 * majority_baseline(recs), 1) for name, recs in sets.items()}


# --------------------------------------------------------------------------- composition


def composition_data(exp: KVExperiment, steps: int) -> list[dict[str, str]]:
    """D_C: KV arithmetic over held-in keys, plus ``anchor_mix`` numeric arithmetic."""
    import random

    kv = exp.kv()
    n = steps * exp.batch_size
    n_mix = round(n * exp.anchor_mix)
    records = _examples("kv_arithmetic", n - n_mix, kv, keys="held_in", seed=exp.seed + 2)
    records += _examples("numeric_arithmetic", n_mix, kv, seed=exp.seed + 3)
    random.Random(exp.seed).shuffle(records)
    return records


def train_calm(
    exp: KVExperiment, anchor_dir: Path, augment_dir: Path, records: list[dict[str, str]]
) -> tuple[Any, dict[str, Any]]:
    from fusekit.strategies.calm.build import compose_from_paths

    model = compose_from_paths(
        anchor_dir,
        [augment_dir],
        seed=exp.seed,
        every=exp.every,
        mask=exp.mask,
        pairs=[exp.pairs] if exp.pairs else None,
        heads=exp.calm_heads,
        kv_norm=exp.kv_norm,
        scale_output=exp.scale_output,
        null_key=exp.null_key,
    )
    start = time.perf_counter()
    history = train_loop(
        model,
        model.trainable_parameters(),
        Pool(model.anchor_tokenizer, records),
        exp.calm_steps,
        exp.calm_lr,
        exp.batch_size,
        exp.seed,
        "calm",
    )
    return model, {
        "seconds": round(time.perf_counter() - start, 1),
        "loss_curve": history,
        **model.parameter_report(),
        "pairs": [list(p) for p in model.composition_config.augments[0].pairs],
    }


def train_lora_baseline(
    exp: KVExperiment, model: Any, records: list[dict[str, str]]
) -> tuple[Any, dict[str, Any]]:
    from fusekit.strategies.calm.baselines import lora_model

    peft_model, info = lora_model(model.anchor, model.composition.num_parameters(), seed=exp.seed)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    start = time.perf_counter()
    history = train_loop(
        peft_model,
        params,
        Pool(model.anchor_tokenizer, records),
        exp.calm_steps,
        exp.lora_lr or exp.calm_lr,
        exp.batch_size,
        exp.seed,
        "lora",
    )
    return peft_model, {
        **info,
        "seconds": round(time.perf_counter() - start, 1),
        "loss_curve": history,
    }


# --------------------------------------------------------------------------- the run


def run_experiment(exp: KVExperiment, out: Path, bases: Path | None = None) -> dict[str, Any]:
    """Train everything, score everything; writes ``results.json`` (and the composition) to ``out``."""
    from fusekit.strategies.calm.io import save_composition
    from fusekit.tasks import kv_tokenizer

    if exp.threads:
        torch.set_num_threads(exp.threads)
    out.mkdir(parents=True, exist_ok=True)
    bases = bases or out / "bases"
    t0 = time.perf_counter()
    augment_dir, augment_info = train_base(exp, "augment", bases)
    anchor_dir, anchor_info = train_base(exp, "anchor", bases)
    tok = kv_tokenizer(exp.kv())
    sets = _eval_sets(exp)
    records = composition_data(exp, exp.calm_steps)
    model, calm_info = train_calm(exp, anchor_dir, augment_dir, records)
    save_composition(model, out / "calm")
    table = {
        "m_A (augment)": score_all(model.augments[0], tok, sets),
        "m_B (anchor)": score_all(model.anchor, tok, sets),
        "CALM": score_all(model, tok, sets),
    }
    lora_info = None
    if exp.lora:
        peft_model, lora_info = train_lora_baseline(exp, model, records)
        table[f"LoRA (r={lora_info['rank']})"] = score_all(peft_model, tok, sets)
    table["chance (majority answer)"] = chance_levels(sets)
    results = {
        "settings": dataclasses.asdict(exp),
        "table": table,
        "probe": probe_augment(exp, model.augments[0], tok) if exp.probe else None,
        "augment": augment_info,
        "anchor": anchor_info,
        "calm": calm_info,
        "lora": lora_info,
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(format_table(table), file=sys.stderr)
    return results


def format_table(table: dict[str, dict[str, float]]) -> str:
    """The paper's Table 1 layout: tasks as rows, models as columns (exact match, %)."""
    models = list(table)
    lines = ["| task | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for task in TABLE_TASKS:
        lines.append(
            f"| {task} | "
            + " | ".join(f"{table[m].get(task, float('nan')):.1f}" for m in models)
            + " |"
        )
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--bases",
        type=Path,
        default=None,
        help="cache folder for the trained m_A/m_B (default OUT/bases)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    exp = KVExperiment()
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in {f.name for f in dataclasses.fields(exp)}:
            parser.error(f"unknown setting {name!r}")
        setattr(exp, name, _parse_value(value))
    run_experiment(exp, args.out, args.bases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

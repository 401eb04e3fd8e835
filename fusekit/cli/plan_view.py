"""``--dry-run`` as a person reads it: the plan's figures in labelled lines.

The plan itself is a JSON-able dict (``fusekit.api.plan``; ``--dry-run --json``
prints it whole for machines). This view leads with what decides whether a run
is worth starting and fits the machine — the models, the layer map, parameter
counts, the training shape, disk and memory — then lists the strategy's own
settings as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Keys the view renders in its own lines (or leaves to ``--json``: per-layer sources).
_SHOWN = {
    "strategy", "models", "layers_before", "layers_after", "layer_map", "layer_sources",
    "parameters_before", "parameters_after", "trainable_parameters", "disk_bytes", "shards",
    "peak_memory_bytes", "training_memory_bytes", "memory_device", "memory_advice", "train",
    "note", "anchor", "augments",
    "anchor_parameters", "composition_bytes_fp32", "target", "sources", "steps", "lr",
    "composition_parameters", "share_of_anchor", "architecture", "seq_len",
    "offline_store_bytes_per_chunk_per_source",
}  # fmt: skip


def human_bytes(n: float) -> str:
    """``7340032`` -> ``7.3 MB`` (decimal units, as disk and memory are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def human_count(n: float) -> str:
    """``1305728`` -> ``1.31 M`` parameters."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"


def _model_line(facts: dict[str, Any]) -> str:
    line = (
        f"{facts['name']} ({facts['architecture']}, {facts['layers']} layers, "
        f"d {facts['hidden']}, vocab {facts['vocab']:,}, "
        f"{human_count(facts['parameters'])} parameters)"
    )
    if facts.get("from_scratch"):
        line += ", from scratch"
    return line


def _train_line(train: dict[str, Any]) -> str:
    length = (
        f"{train['steps']} steps"
        if train.get("steps") is not None
        else (f"{train['epochs']} epochs")
    )
    rows = train["batch_size"] * train.get("grad_accum", 1)
    return (
        f"{length} x {rows} rows x {train['seq_len']} tokens, lr {train['lr']:g}, "
        f"{train.get('precision', 'fp32')}"
    )


def _memory_lines(plan: dict[str, Any]) -> list[str]:
    lines = []
    if "peak_memory_bytes" in plan:
        lines.append(f"surgery ~{human_bytes(plan['peak_memory_bytes'])} beyond the interpreter")
    step = plan.get("training_memory_bytes")
    if step:
        parts = ", ".join(
            f"{name} {human_bytes(value)}"
            for name, value in step.items()
            if name not in ("total", "options", "ranks") and value
        )
        each = f" per process of {step['ranks']}" if step.get("ranks", 1) > 1 else ""
        lines.append(f"training step ~{human_bytes(step['total'])}{each} ({parts})")
    device = plan.get("memory_device")
    if step and device:
        fits = "fits" if step["total"] <= device["bytes"] else "does NOT fit"
        lines.append(f"{fits} the {human_bytes(device['bytes'])} of {device['name']}")
        for setting, total in plan.get("memory_advice", []):
            lines.append(f"  with {setting}: ~{human_bytes(total)}")
    return lines


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _wrap(items: list[str], width: int = 88) -> list[str]:
    """``a, b, c`` over as few lines of ``width`` characters as the items allow."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += ", " + item
        else:
            lines.append(item)
    return lines


def render_plan(plan: dict[str, Any]) -> str:
    """The labelled lines of a plan (see the module docstring)."""
    rows: list[tuple[str, str]] = []
    for role, facts in plan.get("models", {}).items():
        rows.append((role.replace("_", " "), _model_line(facts)))
    if "layer_map" in plan:
        parents = plan.get("layers_before", {})
        layer_map = plan["layer_map"]
        if len(parents) == 1:  # one parent: its layer ranges alone read best
            layer_map = layer_map.replace(f"{Path(next(iter(parents))).name}[", "[")
        before = ", ".join(str(n) for n in parents.values())
        marked = "   (* new)" if "*" in layer_map else ""
        rows.append(("layers", f"{before} -> {plan['layers_after']}: {layer_map}{marked}"))
    counts = []
    if "parameters_after" in plan:
        counts.append(f"{human_count(plan['parameters_after'])} after")
    if "trainable_parameters" in plan:
        counts.append(f"{human_count(plan['trainable_parameters'])} trainable")
    if plan.get("share_of_anchor") is not None:
        counts.append(f"composition {100 * plan['share_of_anchor']:.1f} % of the anchor")
    if counts:
        rows.append(("parameters", ", ".join(counts)))
    if plan.get("train"):
        rows.append(("training", _train_line(plan["train"])))
    if "disk_bytes" in plan:
        shards = plan.get("shards")
        suffix = f" in {shards} shard{'s' if shards != 1 else ''}" if shards else ""
        rows.append(("disk", human_bytes(plan["disk_bytes"]) + suffix))
    for i, line in enumerate(_memory_lines(plan)):
        rows.append(("memory" if i == 0 else "", line))
    settings = [
        f"{key.replace('_', ' ')} {_value(value)}"
        for key, value in plan.items()
        if key not in _SHOWN and value is not None
    ]
    for i, line in enumerate(_wrap(settings)):
        rows.append(("settings" if i == 0 else "", line))
    if plan.get("note"):
        rows.append(("note", plan["note"]))
    width = max((len(label) for label, _ in rows), default=0)
    head = f"plan: {plan['strategy']} (dry run: configs and headers read, nothing written)"
    return "\n".join([head, *(f"  {label:<{width}}  {text}" for label, text in rows)])


def render_compare_plan(plan: dict[str, Any]) -> str:
    """``fusekit compare --dry-run``: the parents, then each run's plan under its name."""
    lines = [f"compare: {plan['name']} -> {plan['output']}"]
    for name, facts in plan["parents"].items():
        lines.append(f"  parent {name}: {_model_line(facts)}")
    lines.append(f"  scored on: {', '.join(plan['eval'])}")
    for run in plan["runs"]:
        state = "cached, scored only" if run["cached"] else "runs"
        lines.append(f"\nrun {run['name']} ({state}) -> {run['output']}")
        lines.append(render_plan(run["plan"]))
    return "\n".join(lines)

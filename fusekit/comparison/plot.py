"""The comparison chart: scores per eval set, training-loss curves, held-out curves (runs
with ``train.eval_steps``) and an optional trade-off.

matplotlib is an optional extra (``fusekit[plot]``); ``compare`` imports this module
only where matplotlib is installed, and otherwise says in one line how to get the chart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fusekit.comparison.recipe import CompareSpec


def _colour(table: Any, name: str) -> Any:
    """One colour per model, the same in every panel."""
    return plt.get_cmap("tab10")(table.models().index(name) % 10)


def _bars(ax: Any, table: Any) -> None:
    sets = list(dict.fromkeys(r["data"] for r in table.results))
    models = table.models()
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        values = [table.value(model, d) or 0.0 for d in sets]
        xs = [j + i * width for j in range(len(sets))]
        ax.bar(xs, values, width, label=model, color=_colour(table, model))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sets))])
    metrics = {r["data"]: r["metric"] for r in table.results}
    ax.set_xticklabels([f"{d}\n({metrics[d]})" for d in sets], fontsize=8)
    ax.set_title("score per evaluation set")
    tallest = max((table.value(m, d) or 0.0 for m in models for d in sets), default=0.0)
    if tallest > 0:  # headroom so the legend sits above the bars, not on them
        ax.set_ylim(0, tallest * (1.25 + 0.05 * ((len(models) + 1) // 2)))
    ax.legend(fontsize=7, ncol=2, loc="upper center")


def _losses(ax: Any, table: Any) -> None:
    drawn = False
    for name, run in table.runs.items():
        # every run's fusekit.json has the same training record (None when nothing trained)
        curve = (run.get("training") or {}).get("loss_curve") or []
        if curve:
            ax.plot(
                [p[0] for p in curve], [p[1] for p in curve], label=name, color=_colour(table, name)
            )
            drawn = True
    ax.set_title("training loss")
    ax.set_xlabel("step")
    if drawn:
        ax.legend(fontsize=7)


def _heldout(ax: Any, table: Any) -> None:
    """Held-out scores by step (``train.eval_steps``): a colour per run, a line style per set."""
    styles = ("-", "--", ":", "-.")
    for k, (data, runs) in enumerate(table.curves().items()):
        for name, points in runs.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], styles[k % len(styles)],
                    marker=".", color=_colour(table, name), label=f"{name} · {data}")  # fmt: skip
    ax.set_title("held-out score during training")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)


def _tradeoff(ax: Any, table: Any, spec: CompareSpec) -> None:
    t = spec.tradeoff
    assert t is not None  # drawn only for a compare file with a tradeoff
    rx, ry = table.value(t.reference, t.x), table.value(t.reference, t.y)
    for model in table.models():
        vx, vy = table.value(model, t.x), table.value(model, t.y)
        if model == t.reference or None in (vx, vy, rx, ry):
            continue
        dx, dy = vx - rx, ry - vy  # x: how much worse on x (forgetting); y: gain on y
        ax.scatter([dx], [dy], color=_colour(table, model))
        ax.annotate(model, (dx, dy), fontsize=7)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel(f"forgetting on {t.x} (metric increase)")
    ax.set_ylabel(f"gain on {t.y} (metric decrease)")
    ax.set_title(f"trade-off vs {t.reference} (up and left is better)")


def plot(table: Any, spec: CompareSpec, path: Path) -> Path:
    draw: list[Callable[[Any, Any], None]] = [_bars, _losses]
    if table.curves():
        draw.append(_heldout)
    if spec.tradeoff is not None:
        draw.append(lambda ax, t: _tradeoff(ax, t, spec))
    fig, axes = plt.subplots(1, len(draw), figsize=(6 * len(draw), 4.5))
    for ax, panel in zip(axes, draw, strict=True):
        panel(ax, table)
    fig.suptitle(table.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

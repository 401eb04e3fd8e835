"""The unit loop after ``prepare``: build -> fit -> save -> evaluate, per unit, then the report.

``run_stages`` is the same code in one process and under ``accelerate launch``: with
``--accelerate-config`` the parent writes a job file and every rank runs
``run_stages`` on it (``fusekit.pipeline.distributed``, ``fusekit.pipeline.worker``).  Each rank builds its own copy
of each unit through the strategy's ``build`` (rank 0 first, so caches such as
vocabulary maps or stored top-k are written once); ``Trainer`` shards the data;
rank 0 alone saves, evaluates and reports.  Preparing, provenance and the atomic
rename stay in the parent, so ranks never race on the output folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from fusekit.errors import NonFiniteLossError
from fusekit.evaluation.sets import evaluate_sets
from fusekit.pipeline.checkpoints import remove
from fusekit.recipe.common import TrainSpec
from fusekit.result import StageResult, TrainingRecord
from fusekit.strategies.base import Prepared, Strategy
from fusekit.training.curve import curve_callback
from fusekit.training.fit import fit


class StageContext(BaseModel):
    """What every rank needs besides the recipe and ``Prepared``."""

    model_config = ConfigDict(extra="forbid")

    workdir: str
    checkpoint_root: str
    fingerprint: dict[str, Any]
    resume: bool = False
    output_name: str
    distributed: bool = False


def unit_fingerprint(ctx: StageContext, unit: str) -> dict[str, Any]:
    return {**ctx.fingerprint, "unit": unit}


def unit_label(strategy: Strategy, unit: str) -> str:
    """A unit's name in progress lines: the strategy's tag for "model", else the unit ("lora")."""
    return strategy.tag if unit == "model" else unit


def rank() -> int:
    """This process's rank in the process group (0 when there is none).

    Read from torch.distributed, not accelerate's ``PartialState``: on a CPU-only
    machine launched with the torchrun launcher, PartialState reports a
    non-distributed state (every rank "main") although the gloo group is up.
    """
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@contextlib.contextmanager
def _rank0_first(distributed: bool) -> Iterator[None]:
    """Rank 0 runs the block first (writing caches); the others wait, then run it."""
    if not distributed:
        yield
        return
    import torch.distributed as dist

    if rank() != 0:
        dist.barrier()
    yield
    if rank() == 0:
        dist.barrier()


def _is_main(distributed: bool) -> bool:
    return not distributed or rank() == 0


def _curve(strategy: Strategy, built: Any, unit: str, spec: TrainSpec) -> list[Any]:
    """The held-out curve's callback for the main unit when ``train.eval_steps`` asks."""
    if not spec.eval_steps or unit != strategy.main_unit:
        return []
    refs = strategy.recipe.eval_data()

    def score(model: Any) -> dict[str, float]:
        results = evaluate_sets(
            model, refs, chat_template=spec.chat_template, tokenizer=built.tokenizer
        )
        return {r["data"]: float(r["value"]) for r in results}

    return [curve_callback(score, spec.eval_steps, unit_label(strategy, unit))]


def run_stages(
    strategy: Strategy, prepared: Prepared, ctx: StageContext, callbacks: Sequence[Any] = ()
) -> StageResult | None:
    """Build, fit, save and evaluate each unit; the report (None on ranks other than 0)."""

    workdir = Path(ctx.workdir)
    main = _is_main(ctx.distributed)
    records: dict[str, TrainingRecord | None] = {}
    scores: dict[str, dict[str, Any]] = {}
    details: dict[str, Any] = {}
    spec: TrainSpec | None = strategy.recipe.train
    units = strategy.units(prepared)
    for unit in units:
        assert spec is not None  # units train (``Strategy.units``): the recipe has train:
        with _rank0_first(ctx.distributed):
            built = strategy.build(prepared, unit)
        checkpoints = Path(ctx.checkpoint_root) / unit
        try:
            records[unit] = fit(
                built,
                spec,
                checkpoints,
                fingerprint=unit_fingerprint(ctx, unit),
                resume=ctx.resume,
                label=unit_label(strategy, unit),
                log_path=workdir / "train_log.jsonl" if unit == strategy.main_unit else None,
                callbacks=[*callbacks, *_curve(strategy, built, unit, spec)],
            )
        except NonFiniteLossError:
            if main:  # every step was skipped: its checkpoints hold the untrained input
                remove(checkpoints)
            raise
        details.update(built.details)
        if main:
            strategy.save(built, unit, workdir)
            scores[unit] = strategy.evaluate(built, unit, workdir, ctx.output_name)
        del built
    if strategy.main_unit not in units and main:
        scores[strategy.main_unit] = strategy.evaluate(
            None, strategy.main_unit, workdir, ctx.output_name
        )
    if not main:
        return None
    return strategy.report(prepared, records, scores, details)

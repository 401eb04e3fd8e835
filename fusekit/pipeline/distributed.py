"""Runs under ``accelerate launch``: the parent's launcher, and the config it is given.

With ``--accelerate-config`` the parent writes a job file (the recipe, the prepared
inputs, the stage context) into a private temporary folder and launches
``fusekit.pipeline.worker`` on every rank; each rank runs ``fusekit.pipeline.stages.run_stages``
on it, and global rank 0 writes the result (or the user-facing error) beside the
job file.  The config is checked before any work, since ``accelerate launch``
would report a bad one only after the run has prepared its inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fusekit.errors import FusekitError
from fusekit.pipeline.stages import StageContext
from fusekit.recipe import recipe_to_dict
from fusekit.recipe.common import BaseRecipe
from fusekit.recipe.loading import load_yaml
from fusekit.result import StageResult
from fusekit.strategies.base import Prepared, Strategy

WORKER_ENV = "FUSEKIT_TRAINING_WORKER"


@dataclass(frozen=True)
class AccelerateConfig:
    """An ``--accelerate-config`` file as it was read and checked, once: every later
    decision (sharding checks, the memory estimate, which machine this is) and the
    launch itself use these settings, so a file edited during a run cannot make them
    disagree."""

    path: Path
    settings: dict[str, Any]

    @property
    def machine_rank(self) -> int:
        return int(self.settings.get("machine_rank") or 0)

    @property
    def num_processes(self) -> int:
        return int(self.settings.get("num_processes") or 1)


def run_distributed(
    strategy: Strategy, prepared: Prepared, ctx: StageContext, config: AccelerateConfig
) -> StageResult | None:
    """``run_stages`` on every rank of ``accelerate launch --config_file config``.

    The job file and the ranks' answer live in a private temporary folder of this
    machine, not beside the output: on a machine other than the first, whose parent
    never touches the output, there is then nothing to collide with machine 0's.
    None when none of this machine's ranks is global rank 0 (the one that reports).
    """
    with tempfile.TemporaryDirectory(prefix="fusekit-job-") as folder:
        job = Path(folder) / "job.json"
        job.write_text(
            json.dumps(
                {
                    "recipe": recipe_to_dict(strategy.recipe),
                    "prepared": prepared.model_dump(mode="json"),
                    "context": ctx.model_copy(update={"distributed": True}).model_dump(mode="json"),
                }
            )
        )
        # the settings the checks read, not the file as it may be now
        settings = Path(folder) / "accelerate.yaml"
        settings.write_text(yaml.safe_dump(config.settings))
        cmd = [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(settings),
            "-m", "fusekit.pipeline.worker", str(job),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env={**os.environ, WORKER_ENV: "1"})
        try:
            proc.wait()
        except BaseException:
            # Ctrl-C or SIGTERM here: pass SIGTERM on (accelerate's launcher ends its ranks
            # on it; a SIGKILL would leave them training into the checkpoint folder).
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        error = job.with_suffix(".error.json")
        if error.is_file():
            raise FusekitError(json.loads(error.read_text())["error"])
        if proc.returncode != 0:
            raise RuntimeError(
                f"distributed training failed (exit {proc.returncode}): {' '.join(cmd)}"
            )
        result = job.with_suffix(".result.json")
        return StageResult.model_validate_json(result.read_text()) if result.is_file() else None


def check_sharding(config: AccelerateConfig, recipe: BaseRecipe) -> None:
    """Refuse settings of the accelerate config that clash with the recipe's, before any
    work: ``train.eval_steps`` with several processes (the curve scores the whole model
    on rank 0 while the other ranks would wait on it; sharded weights are not whole on
    any one rank), and FSDP's own ``fsdp_activation_checkpointing`` together with
    ``train.gradient_checkpointing`` would recompute activations twice, and
    transformers' Trainer refuses the pair only once every rank has loaded its models."""
    doc = config.settings
    fsdp = doc.get("fsdp_config") or {}
    train = recipe.train
    if train is not None and train.eval_steps and config.num_processes > 1:
        raise FusekitError(
            f"accelerate config {config.path}: train.eval_steps scores the whole model in one "
            "process, and this config trains in several; drop train.eval_steps (the output "
            "is scored on data.eval after training) or train in one process"
        )
    if (
        doc.get("distributed_type") == "FSDP"
        and fsdp.get("fsdp_activation_checkpointing") in (True, "true", "True")
        and train is not None
        and train.gradient_checkpointing
    ):
        raise FusekitError(
            f"accelerate config {config.path}: fsdp_activation_checkpointing and the recipe's "
            "train.gradient_checkpointing both recompute activations; keep one (drop "
            "train.gradient_checkpointing to let FSDP2 checkpoint its wrapped blocks)"
        )


def check_accelerate_config(path: str | Path) -> AccelerateConfig:
    """The ``--accelerate-config`` file, read and checked before any work.

    ``accelerate launch`` reads it only after fusekit has prepared the run, and
    reports a bad one as its own traceback, which the parent could only call an
    internal error.  Checked here: the file exists and is YAML (or JSON) holding a
    mapping; ``distributed_type`` is one accelerate knows; ``num_processes`` and
    ``num_machines`` are at least 1 and ``machine_rank`` below ``num_machines``; FSDP
    is version 2 and DeepSpeed not ZeRO-3 (``FusekitTrainer`` refuses both too, for a
    launch that did not come through fusekit).
    """
    from accelerate.utils import DistributedType

    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FusekitError(f"accelerate config {file} does not exist")
    try:
        doc = load_yaml(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FusekitError(f"accelerate config {file} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise FusekitError(
            f"accelerate config {file} is not valid YAML{where}; write it with `accelerate config`"
        ) from None
    if not isinstance(doc, dict):
        raise FusekitError(f"accelerate config {file} does not hold a mapping of settings")
    known = [d.value for d in DistributedType]
    kind = doc.get("distributed_type")
    if kind is not None and str(kind) not in known:
        raise FusekitError(
            f"accelerate config {file}: distributed_type {kind!r} is not one accelerate knows; "
            f"choose one of {', '.join(known)}"
        )
    for key in ("num_processes", "num_machines"):
        value = doc.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise FusekitError(
                f"accelerate config {file}: {key} must be a whole number ≥ 1, got {value!r}"
            )
    rank, machines = doc.get("machine_rank"), doc.get("num_machines") or 1
    if rank is not None and (
        not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < machines
    ):
        raise FusekitError(
            f"accelerate config {file}: machine_rank must be between 0 and num_machines - 1 "
            f"({machines - 1}), got {rank!r}"
        )
    fsdp = doc.get("fsdp_config") or {}
    if kind == "FSDP" and str(fsdp.get("fsdp_version", 1)) != "2":
        raise FusekitError(
            f"accelerate config {file}: fusekit shards with FSDP2 only; set "
            "fsdp_config.fsdp_version: 2"
        )
    stage = (doc.get("deepspeed_config") or {}).get("zero_stage")
    if kind == "DEEPSPEED" and str(stage) == "3":
        raise FusekitError(
            f"accelerate config {file}: DeepSpeed ZeRO-3 is not supported (its partitioned "
            "weights cannot be saved from rank 0); shard with FSDP2 (distributed_type: FSDP, "
            "fsdp_version: 2)"
        )
    return AccelerateConfig(file, doc)

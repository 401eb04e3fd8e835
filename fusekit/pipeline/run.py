"""The run: the one pipeline every strategy goes through.

``run`` owns what every strategy shares — the atomic output folder, checkpoints
and the lock on them (``fusekit.pipeline.checkpoints``), fingerprinted resume, the
accelerate relaunch (``fusekit.pipeline.distributed``), provenance, the model card —
and a strategy supplies stages (``fusekit.strategies.base``): prepare -> per unit
build -> fit -> save -> evaluate (``fusekit.pipeline.stages``) -> report.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.data.chat import template_file
from fusekit.errors import FusekitError
from fusekit.io.gguf import conversion_record
from fusekit.io.hashing import data_hash, folder_hash, hash_in_background
from fusekit.io.lock import lock_checkpoints
from fusekit.io.output import atomic_output, check_output
from fusekit.io.provenance import versions, write_model_card, write_run_record
from fusekit.models.resolve import local_models
from fusekit.pipeline.checkpoints import (
    checkpoint_root,
    leftovers,
    lock_file,
    prepare_checkpoints,
    remove,
)
from fusekit.pipeline.checks import checked, file_data
from fusekit.pipeline.distributed import (
    AccelerateConfig,
    check_accelerate_config,
    check_sharding,
    run_distributed,
)
from fusekit.pipeline.stages import StageContext, run_stages, unit_fingerprint, unit_label
from fusekit.recipe import load_recipe, parse_recipe, recipe_to_dict
from fusekit.recipe.common import BaseRecipe
from fusekit.registry import list_strategies
from fusekit.result import InputRecord, RunResult
from fusekit.training.fit import NOT_WEIGHTS_TRAIN

#: What ``run``, ``build`` and ``plan`` take: a recipe file, a recipe mapping or a recipe.
RecipeSource = str | Path | dict[str, Any] | BaseRecipe


def as_recipe(recipe: RecipeSource, overrides: list[str] | None = None) -> BaseRecipe:
    """A recipe object from a path, a mapping or a recipe, with ``--set`` overrides applied."""
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, overrides)
    if isinstance(recipe, dict):
        return parse_recipe(recipe, overrides=overrides)
    if overrides:
        return parse_recipe(recipe_to_dict(recipe), overrides=overrides)
    return recipe


def local_model_paths(recipe: BaseRecipe) -> list[Path]:
    """Every local model folder a recipe names (the output may never touch one)."""
    return [Path(ref.path) for ref in local_models(recipe)]


def data_files(recipe: BaseRecipe) -> dict[str, Path]:
    """The files that shape the weights besides the models: the training data (evaluation
    sets do not) and the chat templates given as files (their content, not their names,
    counts): the trained model's, and FuseLLM's sources'."""
    files = {
        f"train:{r.label()}": Path(r.path) for ref in recipe.shaping_data() for r in file_data(ref)
    }
    for name, value in recipe.chat_templates().items():
        template = template_file(value)
        if template is not None:
            files[name] = template
    return files


def curve_files(recipe: BaseRecipe) -> dict[str, InputRecord]:
    """The evaluation files behind a held-out curve (``train.eval_steps``), hashed: they
    shape no weight, so the fingerprint leaves them out, but an edited one makes a
    recorded curve stale (compare runs the recipe again)."""
    if recipe.train is None or not recipe.train.eval_steps:
        return {}
    return {
        f"eval:{r.label()}": InputRecord(path=str(r.path), hash=data_hash(Path(r.path)))
        for ref in recipe.eval_data()
        for r in file_data(ref)
    }


#: Recipe fields that do not change the trained weights, left out of the resume fingerprint.
_NOT_WEIGHTS = ("name", "description", "output", "overwrite", "baselines")


def weight_fields(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """The recipe without output, logging, checkpointing and resume settings."""
    fields = {k: v for k, v in recipe_dict.items() if k not in _NOT_WEIGHTS}
    if isinstance(fields.get("train"), dict):
        fields["train"] = {k: v for k, v in fields["train"].items() if k not in NOT_WEIGHTS_TRAIN}
    if isinstance(fields.get("data"), dict):
        fields["data"] = {k: v for k, v in fields["data"].items() if k != "eval"}
    return fields


def run(
    recipe: RecipeSource,
    *,
    output: str | Path | None = None,
    overwrite: bool | None = None,
    overrides: list[str] | None = None,
    accelerate_config: str | Path | None = None,
    resume: bool | None = None,
    callbacks: Sequence[Any] = (),
) -> RunResult | None:
    """Build (and train) what the recipe describes into its output folder; return the result.

    The one pipeline: prepare (resolve, surgery) -> per unit build -> fit -> save ->
    evaluate -> provenance.  ``resume`` (default: the recipe's ``train.resume``)
    continues from the checkpoints an interrupted run left in ``.OUT.checkpoints/``
    (the newest complete one; broken ones are skipped, said and removed); while a
    run works it holds the lock on them, so a second run of the same output is
    refused.  ``callbacks`` are extra ``transformers.TrainerCallback`` objects for
    every fit.  With an accelerate config for a machine other than the first
    (``machine_rank`` > 0) only that machine's ranks run (``_run_other_machine``) and
    the result is None: machine 0 writes the output.
    """
    recipe = as_recipe(recipe, overrides)
    recipe_dict = recipe_to_dict(recipe)  # as the user wrote it (.gguf files, not the cache)
    out = output or recipe.output
    if not out:
        raise FusekitError("no output folder: give -o OUT or set output: in the recipe")
    out = Path(out)
    config = check_accelerate_config(accelerate_config) if accelerate_config else None
    spec = recipe.train
    resume = bool(spec is not None and spec.resume) if resume is None else resume
    recipe, strategy = checked(recipe)  # every folder and data file, before any work
    if config is not None:
        check_sharding(config, recipe)
    if config is not None and config.machine_rank > 0:
        _run_other_machine(strategy, recipe, recipe_dict, out, config, resume)
        return None
    root = checkpoint_root(out)
    start = time.perf_counter()
    overwrite = recipe.overwrite if overwrite is None else overwrite
    local = local_model_paths(recipe)
    check_output(out, overwrite=overwrite, inputs=local)  # before the lock beside it
    release = lock_checkpoints(out, lock_file(out))  # before the try: a refusal leaves them
    tmp: Path | None = None  # the temporary folder, kept out of error messages
    try:
        with atomic_output(out, overwrite=overwrite, inputs=local) as tmp:
            # The bases' hashes run beside prepare; every later hash of them (prepare's
            # own included) waits for that one reading instead of making another.
            hash_in_background([path for path in local if path.is_dir()])
            prepared = strategy.prepare(Path(tmp))
            inputs, data, ctx = _stage_context(
                recipe, recipe_dict, prepared, Path(tmp), out, resume
            )
            curve_data = curve_files(recipe)
            units = strategy.units(prepared)
            prepare_checkpoints(
                root,
                units,
                resume=resume,
                fingerprint=lambda unit: unit_fingerprint(ctx, unit),
                label=lambda unit: unit_label(strategy, unit),
            )
            if config is not None and units:
                stages = run_distributed(strategy, prepared, ctx, config)
            else:
                stages = run_stages(strategy, prepared, ctx, callbacks)
            assert stages is not None  # one process is always rank 0
            result = RunResult(
                output=str(out),
                strategy=recipe.strategy,
                recipe=recipe_dict,
                plan=prepared.plan,
                inputs=inputs,
                data=data,
                curve_data=curve_data,
                versions=versions(),
                seconds=round(time.perf_counter() - start, 2),
                **stages.model_dump(),
            )
            write_run_record(tmp, result)
            write_model_card(
                tmp,
                title=f"{out.name} ({recipe.strategy})",
                body=_card_body(recipe, result),
                base_models=[r.path for r in inputs.values()],
                strategy=recipe.strategy,
            )
        remove(root)
    except BaseException as exc:
        leftovers(root)
        if isinstance(exc, FusekitError) and tmp is not None:
            exc.replace_path(str(tmp), str(out))
        raise
    finally:
        release()
    log.info(f"fusekit: wrote {out}")
    return result


def _stage_context(
    recipe: BaseRecipe,
    recipe_dict: dict[str, Any],
    prepared: Any,
    workdir: Path,
    out: Path,
    resume: bool,
) -> tuple[dict[str, InputRecord], dict[str, InputRecord], StageContext]:
    """The run's input and data records, and what every rank needs (``StageContext``).

    ``recipe_dict`` is the recipe as the user wrote it.  The fingerprint is of the
    inputs' and data's content, so every machine of a multi-machine run computes
    the same one from its own copies.
    """
    inputs = {
        name: InputRecord(
            path=m.path, hash=folder_hash(m.path), converted_from=conversion_record(m.path)
        )
        for name, m in prepared.inputs.items()
    }
    data = {k: InputRecord(path=str(p), hash=data_hash(p)) for k, p in data_files(recipe).items()}
    ctx = StageContext(
        workdir=str(workdir),
        checkpoint_root=str(checkpoint_root(out)),
        fingerprint={
            "recipe": weight_fields(recipe_dict),
            "inputs": {k: v.hash for k, v in inputs.items()},
            "data": {k: v.hash for k, v in data.items()},
            # the memory estimate follows settings that leave the weights alone
            # (gradient checkpointing) and the machine (a GPU or not): not the weights'
            "plan": {k: v for k, v in prepared.plan.items() if k != "training_memory_bytes"},
        },
        resume=resume,
        output_name=out.name,
    )
    return inputs, data, ctx


def _run_other_machine(
    strategy: Any,
    recipe: BaseRecipe,
    recipe_dict: dict[str, Any],
    out: Path,
    config: AccelerateConfig,
    resume: bool,
) -> None:
    """This machine's ranks of a run whose output machine 0 writes (``machine_rank`` > 0).

    Machine 0's parent owns the output, its temporary sibling, the lock and the run
    record, and global rank 0 (on machine 0) saves.  Here the inputs are prepared
    into a private scratch folder, never beside the output; the ranks read
    ``--resume`` checkpoints from ``.OUT.checkpoints``, which must then be on a
    filesystem every machine shares.  When nothing trains, machine 0 works alone.
    """
    with tempfile.TemporaryDirectory(prefix="fusekit-machine-") as scratch:
        prepared = strategy.prepare(Path(scratch))
        if not strategy.units(prepared):
            log.info(f"fusekit: nothing trains; machine 0 writes {out} alone")
            return
        ctx = _stage_context(recipe, recipe_dict, prepared, Path(scratch), out, resume)[2]
        run_distributed(strategy, prepared, ctx, config)
    log.info(f"fusekit: this machine's ranks are done; machine 0 writes {out}")


def build(
    recipe: RecipeSource, *, output: str | Path | None = None, overwrite: bool | None = None
) -> RunResult | None:
    """Build without training (``train.steps: 0``): e.g. a CALM composition at initialisation."""
    recipe = as_recipe(recipe)
    if recipe.train is not None:
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"steps": 0})})
    return run(recipe, output=output, overwrite=overwrite)


def _card_body(recipe: BaseRecipe, result: RunResult) -> str:
    desc = list_strategies().get(recipe.strategy, recipe.strategy)
    lines = [f"Made with fusekit's `{recipe.strategy}` strategy: {desc}.", ""]
    if recipe.description:
        lines += [recipe.description, ""]
    rows: dict[str, object] = {
        k: v for k, v in result.details.items() if isinstance(v, (int, float, str))
    }
    if result.training is not None and result.training.trained:
        rows.update(steps=result.training.steps, final_loss=result.training.final_loss)
    if rows:
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows.items()]
        lines.append("")
    if result.tables:
        lines += [result.tables, ""]
    lines.append("The full recipe, plan and input hashes are in `fusekit.json`.")
    return "\n".join(lines)

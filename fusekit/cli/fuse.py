"""``fusekit fuse --strategy TAG …``: a recipe written from command-line options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fusekit.cli.app import app, check_json_flag, user_errors
from fusekit.cli.recipes import print_summary, show_plan
from fusekit.errors import FusekitError
from fusekit.registry import canonical_tag

# Which options belong to which built-in strategy; anything else given is refused by
# name.  Other registered strategies take their fields with --set key=value.
_OPTIONS = {
    "depth_upscaling": {"model", "remove", "slices"},
    "block_expansion": {"model", "groups", "blocks_per_group"},
    "calm": {"anchor", "augment", "every"},
    "fusellm": {"target", "source", "lam", "fusion", "align"},
}
_FLAG = {"blocks_per_group": "--blocks-per-group", "lam": "--lambda", "source": "--source"}


def _train(opts: dict[str, Any], data: str | None, default_steps: int | None) -> dict[str, Any]:
    train: dict[str, Any] = {}
    steps = opts["steps"] if opts["steps"] is not None else default_steps
    if steps is not None:
        train["steps"] = steps
    for key in ("lr", "batch_size", "seed"):
        if opts[key] is not None:
            train[key] = opts[key]
    if data is not None:
        train["data"] = data
    return train


def build_recipe(strategy: str, opts: dict[str, Any]) -> dict[str, Any]:
    """The recipe mapping that ``fusekit fuse`` options stand for."""
    tag = canonical_tag(strategy)
    given = {k for k, v in opts.items() if v not in (None, [], ())}
    stray = given & (set().union(*_OPTIONS.values()) - _OPTIONS.get(tag, set()))
    if stray:
        flags = ", ".join(sorted(_FLAG.get(s, "--" + s.replace("_", "-")) for s in stray))
        raise FusekitError(f"{flags} do(es) not apply to --strategy {tag}")
    recipe: dict[str, Any] = {"strategy": tag}
    data = opts["data"]
    if tag not in _OPTIONS:  # a registered strategy of its own: fields come from --set
        if data is not None or opts["steps"] is not None:
            recipe["train"] = _train(opts, data, None)
        return recipe
    if tag == "depth_upscaling":
        recipe["model"] = opts["model"]
        if opts["remove"] is not None:
            recipe["remove"] = opts["remove"]
        if opts["slices"]:
            recipe["slices"] = [s for s in opts["slices"].split(",") if s.strip()]
    elif tag == "block_expansion":
        recipe.update(model=opts["model"], groups=opts["groups"])
        if opts["blocks_per_group"] is not None:
            recipe["blocks_per_group"] = opts["blocks_per_group"]
    elif tag == "calm":
        recipe.update(anchor=opts["anchor"], augment=list(opts["augment"] or []))
        if opts["every"] is not None:
            recipe["every"] = opts["every"]
        recipe["data"] = {"train": data} if data else {}
        recipe["train"] = _train(opts, None, 1000)
        return recipe
    else:
        recipe.update(target=opts["target"], sources=list(opts["source"] or []))
        for key in ("fusion", "align"):
            if opts[key] is not None:
                recipe[key] = opts[key]
        if opts["lam"] is not None:
            recipe["lambda"] = opts["lam"]
        recipe["train"] = _train(opts, data, 1000)
        return recipe
    if data is not None:  # surgery strategies train only when given data
        recipe["train"] = _train(opts, data, 100)
    elif opts["steps"] == 0:
        pass  # the contract: --steps 0 saves the untrained result, which needs no data
    elif any(opts[k] is not None for k in ("steps", "lr", "batch_size")):
        raise FusekitError(f"--strategy {tag} trains only with --data FILE; add it")
    return recipe


_MODEL_KEYS = ("model", "anchor", "augment", "target", "sources")


def _set_loading(recipe: dict[str, Any], **options: bool) -> None:
    """Apply ``--allow-pickle`` / ``--trust-remote-code`` to every model the options name."""

    def local(ref: Any) -> Any:
        return {"path": ref, **options} if isinstance(ref, str) else ref

    for key in _MODEL_KEYS:
        value = recipe.get(key)
        if isinstance(value, list):
            recipe[key] = [local(v) for v in value]
        elif value is not None:
            recipe[key] = local(value)


@app.command()
@user_errors
def fuse(
    strategy: str = typer.Option(..., "--strategy", help="calm | fusellm | block_expansion | …"),
    output: Path | None = typer.Option(None, "-o", "--output", help="output folder"),
    model: str | None = typer.Option(None, "--model", help="model folder (surgery)"),
    remove: int | None = typer.Option(None, "--remove", help="depth up-scaling: SOLAR's m"),
    slices: str | None = typer.Option(None, "--slices", help="depth up-scaling: 0:24,8:32"),
    groups: int | None = typer.Option(None, "--groups", help="block expansion: N groups"),
    blocks_per_group: int | None = typer.Option(None, "--blocks-per-group", help="P"),
    anchor: str | None = typer.Option(None, "--anchor", help="CALM anchor model folder"),
    augment: list[str] = typer.Option([], "--augment", help="CALM augmenting model(s)"),
    every: int | None = typer.Option(None, "--every", help="CALM: pair every k-th layer"),
    target: str | None = typer.Option(None, "--target", help="FuseLLM target model"),
    source: list[str] = typer.Option([], "--source", help="FuseLLM source model(s)"),
    lam: float | None = typer.Option(None, "--lambda", help="FuseLLM: weight of the CLM loss"),
    fusion: str | None = typer.Option(None, "--fusion", help="mince | avgce"),
    align: str | None = typer.Option(None, "--align", help="mined | em | offsets"),
    data: str | None = typer.Option(None, "--data", help="training data file"),
    steps: int | None = typer.Option(None, "--steps", help="0 saves the untrained result"),
    lr: float | None = typer.Option(None, "--lr"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    seed: int | None = typer.Option(None, "--seed"),
    set_: list[str] = typer.Option([], "--set", help="override: key.path=value"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, write nothing"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: the plan as JSON"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    resume: bool = typer.Option(
        False, "--resume", help="continue from the checkpoints an interrupted run left"
    ),
    accelerate_config: Path | None = typer.Option(
        None, "--accelerate-config", help="train under `accelerate launch` with this config"
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="load pickled (.bin) weights: runs code from the file"
    ),
    trust_remote_code: bool = typer.Option(
        False, "--trust-remote-code", help="run model code shipped in the model folders"
    ),
) -> None:
    """Fuse models from command-line options, without a recipe file."""
    from fusekit import api
    from fusekit.recipe import parse_recipe

    opts = dict(locals())
    data_dict = build_recipe(strategy, opts)
    if allow_pickle or trust_remote_code:
        _set_loading(data_dict, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    recipe = parse_recipe(data_dict, source="fusekit fuse", overrides=list(set_))
    check_json_flag(as_json, dry_run, "a run's record is OUT/fusekit.json")
    if dry_run:
        show_plan(api.plan(recipe, accelerate_config=accelerate_config), as_json)
        return
    print_summary(
        api.run(
            recipe,
            output=output,
            overwrite=overwrite or None,
            resume=resume or None,
            accelerate_config=accelerate_config,
        )
    )

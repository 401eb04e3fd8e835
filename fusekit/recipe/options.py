"""What ``fusekit fuse``'s shared options mean in a recipe, for the strategies' ``from_options``.

``fusekit fuse`` collects the options every strategy shares (``--data``, ``--steps``,
``--lr``, ``--batch-size``, ``--seed``) and each strategy's own, then asks the
strategy's ``from_options`` (named in its registry entry) for the recipe mapping.
These helpers keep the shared rules in one place.
"""

from __future__ import annotations

from typing import Any

from fusekit.errors import FusekitError


def given(opts: dict[str, Any], name: str) -> bool:
    """Whether the option was given on the command line (not None, not an empty list)."""
    return opts.get(name) not in (None, [], ())


def train_section(opts: dict[str, Any], *, data: bool, default_steps: int | None) -> dict[str, Any]:
    """``train:`` from the shared options; ``data`` puts ``--data`` in it as ``train.data``."""
    train: dict[str, Any] = {}
    steps = opts.get("steps") if opts.get("steps") is not None else default_steps
    if steps is not None:
        train["steps"] = steps
    for key in ("lr", "batch_size", "seed"):
        if opts.get(key) is not None:
            train[key] = opts[key]
    if data and opts.get("data") is not None:
        train["data"] = opts["data"]
    return train


def surgery_training(recipe: dict[str, Any], opts: dict[str, Any], tag: str) -> dict[str, Any]:
    """A surgery recipe trains only when given data; ``--steps 0`` (save untrained) needs none."""
    if opts.get("data") is not None:
        recipe["train"] = train_section(opts, data=True, default_steps=100)
    elif opts.get("steps") == 0:
        pass
    elif any(opts.get(k) is not None for k in ("steps", "lr", "batch_size")):
        raise FusekitError(f"--strategy {tag} trains only with --data FILE; add it")
    return recipe


def plain_recipe(tag: str, opts: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The default ``from_options``: each given option sets its field (``fields``: option ->
    field); ``--data`` or ``--steps`` make a ``train:``."""
    recipe: dict[str, Any] = {"strategy": tag}
    recipe.update({field: opts[name] for name, field in fields.items() if given(opts, name)})
    if opts.get("data") is not None or opts.get("steps") is not None:
        recipe["train"] = train_section(opts, data=True, default_steps=None)
    return recipe

"""The validation pass every run makes before any work (and ``--dry-run``, ``validate``).

A recipe that parses can still name a folder fusekit cannot use completely or a
data file it cannot read; found half-way through a surgery or after an hour of
training, either costs the user the work and leaves them a traceback.  This pass
checks every local model folder completely (``fusekit.io.validate``) and reads
every data file once — decoding it, checking its records — so those problems are
one line each, up front.  Models fusekit trains itself (``scratch:`` specs) are
built by fusekit and skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def local_models(recipe: Any) -> list[Any]:
    """Every ``LocalModel`` reference in a recipe, in field order."""
    from pydantic import BaseModel

    from fusekit.recipe.common import LocalModel

    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, LocalModel):
            found.append(node)
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)

    walk(recipe)
    return found


def file_data(ref: Any) -> list[Any]:
    """The ``FileData`` parts of a data reference (one or a list); built-in tasks are not files."""
    from fusekit.recipe.common import FileData

    refs = ref if isinstance(ref, list) else [ref]
    return [r for r in refs if isinstance(r, FileData)]


def check_data(recipe: Any) -> None:
    """Read every training and evaluation data file once, as the run will."""
    from fusekit.training.data import load_records

    shaping = [r for ref in recipe.shaping_data() for r in file_data(ref)]
    for ref in [*shaping, *file_data(recipe.eval_data())]:
        load_records(ref)


def checked(recipe: Any) -> tuple[Any, Any]:
    """The recipe with ``.gguf`` references converted, its strategy, the pass made."""
    from fusekit.io.gguf import with_converted_models
    from fusekit.registry import strategy_class

    recipe = with_converted_models(recipe)
    strategy = strategy_class(recipe.strategy)(recipe)
    check_inputs(recipe, strategy)
    return recipe, strategy


def check_inputs(recipe: Any, strategy: Any) -> None:
    """The whole pass: models, then data; raises the first problem as one line."""
    from fusekit.io.validate import check_model

    seen: set[Path] = set()
    for ref in local_models(recipe):
        path = Path(ref.path).expanduser().resolve()
        if path in seen:
            continue
        seen.add(path)
        check_model(
            path,
            allow_pickle=ref.allow_pickle,
            trust_remote_code=ref.trust_remote_code,
            need_tokenizer=strategy.needs_tokenizer(),
        )
    check_data(recipe)


__all__ = ["check_data", "check_inputs", "checked", "file_data", "local_models"]

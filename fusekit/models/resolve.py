"""The one resolver: a recipe's model references -> the local folders every stage loads.

A reference is a local folder (``LocalModel``; a ``.gguf`` file is converted once
and cached, see ``with_converted_models``) or a ``from_scratch`` spec
(``ScratchModel``, trained once and cached by ``fusekit.models.scratch``).
Strategies call ``model_input(s)`` in ``prepare``; checks, plans, estimates and
provenance read the same references through ``local_models`` and ``peek_model``.
Planning (``--dry-run``) must not train anything, so ``peek_model`` returns the
folder only when it already exists, and None for a from-scratch model that has not
been trained yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fusekit.errors import ModelIOError
from fusekit.io.convert import safetensors_folder
from fusekit.io.folders import model_folder_problem
from fusekit.io.gguf import cached_folder, check_gguf, is_gguf
from fusekit.models import scratch
from fusekit.recipe import parse_recipe, recipe_to_dict
from fusekit.recipe.common import BaseRecipe, LocalModel, ModelRef, ScratchModel, own_load
from fusekit.units import ModelInput


def resolve_model(ref: ModelRef | str | Path) -> Path:
    """A local folder for a model reference, training and caching from-scratch models first."""
    if isinstance(ref, (str, Path)):
        ref = LocalModel.model_construct(path=str(ref), allow_pickle=False, trust_remote_code=False)
    if isinstance(ref, LocalModel):
        problem = model_folder_problem(Path(ref.path), allow_pickle=ref.allow_pickle)
        if problem:
            raise ModelIOError(problem)
        return Path(ref.path)
    if isinstance(ref, ScratchModel):
        return scratch.materialize(ref.from_scratch)
    raise TypeError(f"not a model reference: {ref!r}")


def resolve_models(refs: list[ModelRef]) -> list[Path]:
    """``resolve_model`` for several references; missing from-scratch models train side by side."""
    scratch.train_missing([r.from_scratch for r in refs if isinstance(r, ScratchModel)])
    return [resolve_model(ref) for ref in refs]


def peek_model(ref: ModelRef) -> Path | None:
    """Like ``resolve_model`` but never trains: None for an untrained from-scratch model."""
    if isinstance(ref, ScratchModel):
        folder = scratch.scratch_folder(ref.from_scratch)
        return folder if (folder / "fusekit.json").is_file() else None
    return resolve_model(ref)


def trusts_remote_code(ref: ModelRef) -> bool:
    """A local reference's ``trust_remote_code`` (fusekit's own from-scratch models: False)."""
    return isinstance(ref, LocalModel) and ref.trust_remote_code


def _input(ref: ModelRef, path: Path) -> ModelInput:
    """The folder every stage loads: with ``allow_pickle``, a pickled checkpoint's
    safetensors copy (converted once), so surgery and loaders read one format."""
    allow_pickle = isinstance(ref, LocalModel) and ref.allow_pickle
    if allow_pickle:
        path = safetensors_folder(path)
    return ModelInput(
        path=str(path),
        allow_pickle=allow_pickle,
        trust_remote_code=trusts_remote_code(ref),
        load=own_load(ref),
    )


def model_input(ref: ModelRef) -> ModelInput:
    """A recipe's model reference as a local folder (from-scratch models trained and cached)."""
    return _input(ref, resolve_model(ref))


def model_inputs(refs: list[ModelRef]) -> list[ModelInput]:
    """``model_input`` for several references; missing from-scratch parents train side by side."""
    return [_input(ref, path) for ref, path in zip(refs, resolve_models(refs), strict=True)]


def local_models(recipe: BaseModel) -> list[LocalModel]:
    """Every ``LocalModel`` reference in a recipe, in field order."""
    found: list[LocalModel] = []

    def walk(node: object) -> None:
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


def with_converted_models(recipe: BaseRecipe) -> BaseRecipe:
    """The recipe with every ``.gguf`` model reference pointing at its converted folder."""
    refs = [r for r in local_models(recipe) if is_gguf(r.path)]
    if not refs:
        return recipe
    for ref in refs:  # every file checked before the first is dequantised
        check_gguf(ref.path)
    folders = {r.path: str(cached_folder(r.path)) for r in refs}

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            if (
                isinstance(node.get("path"), str)
                and node["path"] in folders
                and "allow_pickle" in node
            ):
                return {**node, "path": folders[node["path"]]}
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    return parse_recipe(swap(recipe_to_dict(recipe)))

"""Generate the recipe reference (``docs/recipes.md``) and JSON schema from the models.

The docs are produced from the same pydantic models that validate recipes, so they
cannot drift: a test regenerates them and compares.  Run
``python -m fusekit.recipe.reference docs/`` after changing a recipe model.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fusekit.recipe import common
from fusekit.recipe.loading import json_schema
from fusekit.registry import entries, load_target, recipe_model

_COMMON: list[tuple[str, type[BaseModel]]] = [
    ("train (TrainSpec)", common.TrainSpec),
    ("data (DataSpec)", common.DataSpec),
    ("a built-in task as data (TaskData)", common.TaskData),
    ("a data file (FileData)", common.FileData),
    ("a local model (LocalModel)", common.LocalModel),
    ("load (LoadSpec)", common.LoadSpec),
    ("from_scratch (ScratchSpec)", common.ScratchSpec),
]


def sections() -> list[tuple[str, type[BaseModel]]]:
    """Every registered strategy's recipe model, then the shared parts, then the parts a
    strategy's entry names (``reference``): the headings and models the reference documents."""
    own = [(f"strategy: {tag}", recipe_model(tag)) for tag in entries()]
    parts = [
        (heading, load_target(tag, target))
        for tag, entry in entries().items()
        for heading, target in entry.reference
    ]
    return [*own, *_COMMON, *parts]


_INTRO = """# Recipe reference

Generated from the pydantic models in `fusekit/recipe/` and `fusekit/strategies/*/recipe.py` by
`python -m fusekit.recipe.reference docs/`; the JSON schema is in
`docs/recipe.schema.json` (point your editor's YAML plugin at it).

Rules that hold everywhere:

- Unknown keys are errors (`fusekit validate` names the file and the field).
- Relative paths are resolved against the current working directory.
- A model is a local folder (`model: path/to/folder`, or `{path: ..., allow_pickle: true}`)
  or `{from_scratch: {...}}`, a tiny model fusekit trains and caches under
  `$FUSEKIT_CACHE` (default `~/.cache/fusekit`).
- Data is a file path (`.jsonl` with `{"text"}` or `{"prompt","completion"}`, `.json`, `.txt`,
  `.parquet`, or a `datasets` folder), a built-in task `{task: ...}`, or a list of these
  (concatenated).
- `--set key.path=value` overrides any field (`--set train.steps=0`, `--set augment.0.path=x`).
- `train.steps: 0` builds and saves the untrained result; it never means "train by epochs".
- What `train.precision`, `load:`, `train.gradient_checkpointing` and `train.optim` mean for
  trained and frozen weights: [memory.md](memory.md).
"""


def _type_name(annotation: object) -> str:
    text = repr(annotation) if not isinstance(annotation, type) else annotation.__name__
    for prefix in ("typing.", "fusekit.recipe.common.", "pathlib."):
        text = text.replace(prefix, "")
    text = re.sub(r"fusekit\.strategies\.\w+\.recipe\.", "", text)
    text = text.replace("Annotated[", "").replace("NoneType", "None")
    if "_embed_is_minus_one" in text:
        return "list (per augment) of [augment_layer, anchor_layer] pairs; -1 or 'embed' = embeddings \\| None"
    if "Slice," in text:
        return "list of slices (mergekit form, or '0:24' strings) \\| None"
    text = re.sub(r"Optional\[(.*)\]$", r"\1 | None", text)
    if "Tag(" in text or "Discriminator" in text:
        if "LocalModel" in text:
            return "model (path or from_scratch)"
        if "TaskData" in text:
            return "data (path, task, or list)"
    return text.replace("|", " \\| ")


def _default(field: typing.Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        return f"`{field.default_factory()!r}`"
    if field.default is PydanticUndefined:
        return ""
    return f"`{field.default!r}`"


def render_markdown() -> str:
    out = [_INTRO]
    for title, model in sections():
        out.append(f"## {title}\n")
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            out.append(doc[0] + "\n")
        out.append("| field | type | default | description |\n|---|---|---|---|")
        for name, field in model.model_fields.items():
            if name == "strategy":
                continue
            key = field.alias or name
            out.append(
                f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} "
                f"| {field.description or ''} |"
            )
        out.append("")
    return "\n".join(out)


def write(docs: Path) -> None:

    docs.mkdir(parents=True, exist_ok=True)
    (docs / "recipes.md").write_text(render_markdown())
    (docs / "recipe.schema.json").write_text(json.dumps(json_schema(), indent=2) + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))

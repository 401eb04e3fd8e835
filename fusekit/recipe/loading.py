"""Reading recipes: YAML -> overrides -> pydantic validation -> one message per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from fusekit.errors import RecipeError
from fusekit.recipe.common import BaseRecipe
from fusekit.registry import canonical_tag, list_strategies, recipe_model, recipe_union

_MAPPING_TYPES = {"model_type", "dict_type", "model_attributes_type", "union_tag_invalid"}
_TAGS = {"local-model", "scratch-model", "task-data", "file-data", "function-after"}


def _adapter() -> TypeAdapter[Any]:
    """The union of every registered strategy's recipe (the JSON schema's root)."""

    return TypeAdapter(recipe_union())


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if i == 0 and isinstance(item, str) and item.replace("-", "_") in _strategy_tags():
            continue  # the union's own tag, not a field the user wrote
        if isinstance(item, str) and (item in _TAGS or _is_branch(item)):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _is_branch(item: str) -> bool:
    """A union-branch marker pydantic puts in ``loc`` (``list[...]``, ``function-before[...]``)."""
    return item.startswith(("function-", "tagged-union[", "list[", "union[")) or item in (
        "str",
        "int",
    )


def _strategy_tags() -> set[str]:

    return set(list_strategies())


def format_validation_error(err: ValidationError, source: str) -> list[str]:
    """One line per problem: ``FILE: field.path: what is wrong``."""
    lines = []
    for e in err.errors():
        branch = [x for x in e["loc"] if isinstance(x, str) and x.startswith("list[")]
        if branch and e["type"] == "list_type":
            continue  # the value is a single item; the "or a list" branch is not the problem
        if isinstance(e.get("input"), list) and e["type"] in _MAPPING_TYPES:
            continue  # the value is a list; the "single item" branch is not the problem
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelt? see docs/recipes.md for the fields)"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"{msg}, got {e['input']!r}"
        lines.append(f"{source}: {_format_loc(tuple(e['loc']))}: {msg}")
    # A discriminated union reports the same bad field once per branch: keep one copy.
    return list(dict.fromkeys(lines))


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.0.c=value`` in place; the value is parsed as YAML (``1e-3``, ``[1, 2]``)."""
    if "=" not in assignment:
        raise RecipeError([f"--set {assignment!r}: write key.path=value"])
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError([f"--set {assignment!r}: the key is empty"])
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError([f"--set {key}: {part!r} is not an index of the list there"])
            if last:
                node[int(part)] = _parse_scalar(raw)
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = _parse_scalar(raw)
            else:
                node = node.setdefault(part, {})
        else:
            raise RecipeError([f"--set {key}: {'.'.join(parts[:i])} is not a mapping"])


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (YAML would silently keep the last)."""


class NestingError(yaml.YAMLError):
    """Lists or mappings nested past ``MAX_DEPTH`` (PyYAML's composer recurses per level)."""


#: No recipe or config needs more than a handful of levels; PyYAML builds nested nodes
#: recursively, so a list nested 10,000 deep ends in a ``RecursionError`` traceback.
MAX_DEPTH = 64


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys, naming both lines, and deep nesting."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise NestingError(
                    f"nested more than {MAX_DEPTH} levels deep (line {line}); "
                    "a recipe needs only a few"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # complex keys: left to the recipe model to refuse
            if key in seen:
                raise DuplicateKeyError(
                    f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """YAML text parsed safely: no arbitrary objects, no duplicate keys, bounded nesting.

    Raises ``DuplicateKeyError``/``NestingError`` (both ``yaml.YAMLError``) or PyYAML's own.
    """
    return yaml.load(text, Loader=_UniqueKeyLoader)


def read_recipe_data(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML recipe file."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError([f"{p}: recipe file does not exist"])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError([f"{p}: not UTF-8 text (byte {exc.start}); save it as UTF-8"]) from None
    try:
        data = load_yaml(text)
    except (DuplicateKeyError, NestingError) as exc:
        raise RecipeError([f"{p}: {exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise RecipeError([f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise RecipeError([f"{p}: a recipe is a mapping with a 'strategy' key"])
    return data


def parse_recipe(
    data: dict[str, Any], *, source: str = "<recipe>", overrides: list[str] | None = None
) -> BaseRecipe:
    """Validate a recipe mapping (after ``--set`` overrides) into its strategy's model."""
    data = dict(data)
    for assignment in overrides or []:
        apply_override(data, assignment)
    if "strategy" not in data:
        raise RecipeError(
            [f"{source}: strategy: missing; choose one of {sorted(_strategy_tags())}"]
        )
    try:
        data["strategy"] = canonical_tag(str(data["strategy"]))
    except Exception as exc:
        raise RecipeError([f"{source}: strategy: {exc}"]) from None

    try:
        return recipe_model(data["strategy"]).model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, source)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> BaseRecipe:
    """Read, override and validate a YAML recipe; raises ``RecipeError`` listing every problem.

    A compare file (runs and parents, no strategy) is refused with the command that
    runs it, rather than as a recipe missing its ``strategy``.
    """
    data = read_recipe_data(path)
    if isinstance(data, dict) and "strategy" not in data and ("runs" in data or "parents" in data):
        raise RecipeError(
            [
                f"{path}: a compare file (runs and parents), not a recipe; "
                f"run it with: fusekit compare {path}"
            ]
        )
    return parse_recipe(data, source=str(path), overrides=overrides)


def recipe_to_dict(recipe: BaseRecipe) -> dict[str, Any]:
    """The recipe as plain JSON-able data (for ``fusekit.json`` and cache keys)."""
    return recipe.model_dump(mode="json", by_alias=True, exclude_none=True)


def json_schema() -> dict[str, Any]:
    """JSON schema of every recipe, exported into docs/recipe.schema.json."""
    return _adapter().json_schema(by_alias=True)

"""The layering a tool can check (docs/architecture.md), beyond import-linter's contract.

``pyproject.toml``'s ``[tool.importlinter]`` holds the layer order and CI runs
``lint-imports``.  This file checks what that contract cannot say:

* fusekit's own modules are imported at the top of a file.  An import inside a
  function is allowed only of a module that imports torch, transformers or another
  large numeric library when it is imported (``HEAVY``), so that ``fusekit --help``,
  ``validate`` and ``--dry-run`` stay fast; and in the package's face
  (``fusekit/__init__.py``), whose names load the API on first use.
* no two modules import each other, directly or through others, at import time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fusekit"
HEAVY = {"torch", "transformers", "accelerate", "peft", "datasets", "lm_eval", "matplotlib",
         "numpy", "safetensors", "gguf", "tokenizers", "pyarrow"}  # fmt: skip
#: Modules whose in-function imports are the package's lazy face, not layering.
FACES = {"fusekit"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _target(module: str, name: str | None = None) -> str | None:
    """The fusekit module ``from module import name`` (or ``import module``) loads."""
    if name and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module if module in MODULES else None


def _imports(node: ast.AST) -> list[tuple[str, int]]:
    """(imported module, line) of one import statement: third-party names as given."""
    if isinstance(node, ast.Import):
        return [(_target(a.name) or a.name, node.lineno) for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [(_target(node.module, a.name) or node.module, node.lineno) for a in node.names]
    return []


def _top_level(tree: ast.Module) -> list[str]:
    """What a module imports when it is imported (``if TYPE_CHECKING`` blocks excluded)."""
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Try):
            for inner in node.body:
                found += [m for m, _ in _imports(inner)]
        found += [m for m, _ in _imports(node)]
    return found


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _import_graph() -> dict[str, set[str]]:
    """Module -> the fusekit modules importing it runs (its packages' ``__init__`` included)."""
    graph: dict[str, set[str]] = {}
    for name, tree in TREES.items():
        own = {m for m in _top_level(tree) if m in MODULES}
        graph[name] = own | {p for m in own for p in _parents(m)} - {name}
    return graph


def heavy_modules() -> set[str]:
    """fusekit modules that import a large library when imported, directly or through others."""
    graph = _import_graph()
    heavy = {n for n, t in TREES.items() if any(m.split(".")[0] in HEAVY for m in _top_level(t))}
    grew = True
    while grew:
        grew = False
        for name, deps in graph.items():
            if name not in heavy and (deps | set(_parents(name))) & heavy:
                heavy.add(name)
                grew = True
    return heavy


def test_fusekit_modules_are_imported_at_the_top_unless_they_are_heavy() -> None:
    heavy = heavy_modules()
    late = []
    for name, tree in TREES.items():
        if name in FACES:
            continue
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                for module, line in _imports(node):
                    if module in MODULES and module not in heavy:
                        late.append(f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} {module}")
    assert not late, "import these at the top of the file:\n" + "\n".join(sorted(set(late)))


def test_no_import_cycles() -> None:
    graph = _import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1 and not _parents(node).count(dep):
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_heavy_rule_sees_torch() -> None:
    """The check above has teeth: the modules that build models are heavy, the light
    faces of the pipeline are not."""
    heavy = heavy_modules()
    assert {"fusekit.training.trainer", "fusekit.data.causal_lm"} <= heavy
    assert not {"fusekit.registry", "fusekit.recipe", "fusekit.pipeline.run", "fusekit.cli"} & heavy


def test_the_layer_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([str(lint)], capture_output=True, text=True, cwd=PACKAGE.parent,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]

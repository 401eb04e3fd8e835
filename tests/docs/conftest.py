"""Workspaces where the docs' commands are typed exactly as written.

A doc command names placeholders (``base/``, ``RECIPE.yaml``, ``dc.jsonl``, ``OUT`` …).
A workspace is a folder in which each of them exists as a tiny fixture, so the command
runs verbatim through ``bash -c`` with this interpreter's ``fusekit`` first on PATH, the
way a reader pastes it.  Four kinds:

- ``docs_ws``: tiny placeholders and the shipped ``recipes/`` (for dry runs, validation);
- ``shrunk_ws``: the same placeholders, but ``recipes/`` rewritten at toy scale (every
  step count, size and character budget cut down), so the Python blocks and a from-scratch
  quick-start run through the same code in seconds instead of minutes;
- ``full_ws`` (slow tier): the shipped recipes at full scale and the user's cache;
- ``gguf_ws`` (real tier): the two GGUF files under the names the docs use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs.collect import REPO, doc_items
from tests.pipeline.conftest import save_llama, write_corpus
from tests.training.conftest import WORDS

# The placeholder RECIPE.yaml / recipe.yaml: block expansion of the tiny ``a/``, trained on
# corpus.jsonl.  Checkpoints every 2 steps, so an interrupted run leaves one to resume.
TINY_RECIPE = {
    "strategy": "block_expansion",
    "model": "a/",
    "groups": 2,
    "train": {"data": "corpus.jsonl", "steps": 4, "save_steps": 2, "batch_size": 4,
              "seq_len": 16, "lr": 1.0e-3, "log_steps": 1},
}  # fmt: skip

# What ``shrunk_ws`` does to the shipped recipes: every such integer at most this.
SHRINK = {"steps": 2, "max_chars": 4000, "n": 32, "batch_size": 4, "seq_len": 32,
          "hidden_size": 32, "intermediate_size": 64, "vocab_size": 300, "warmup_steps": 0,
          "log_steps": 1}  # fmt: skip


@dataclass(frozen=True)
class Result:
    """What a typed command left: exit status and both streams."""

    code: int
    stdout: str
    stderr: str

    def ok(self) -> Result:
        assert self.code == 0, (
            f"exit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-6000:]}"
        )
        return self


@dataclass
class Workspace:
    """A folder with the docs' placeholders, and the environment commands run in."""

    root: Path
    env: dict[str, str]
    timeout: int

    def _run(self, argv: list[str]) -> Result:
        proc = subprocess.run(
            argv, cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=self.timeout, check=False,
        )  # fmt: skip
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def sh(self, line: str) -> Result:
        """``line`` typed into a shell in this folder (globs, ``VAR=1 cmd`` and all)."""
        return self._run(["bash", "-c", line])

    def py(self, code: str) -> Result:
        """A Python block run as a script in this folder."""
        return self._run([sys.executable, "-c", code])

    def record(self, output: str) -> dict[str, Any]:
        return json.loads((self.root / output / "fusekit.json").read_text())

    def remove(self, *paths: str) -> None:
        """Make room for an output (and its checkpoints) a command is about to write."""
        for rel in paths:
            path = self.root / rel
            for victim in (path, path.parent / f".{path.name}.checkpoints"):
                if victim.is_dir():
                    shutil.rmtree(victim)

    @contextlib.contextmanager
    def here(self) -> Iterator[None]:
        """In-process preparation (fusekit's API) that sees this workspace's cache and cwd."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FUSEKIT_CACHE", self.env["FUSEKIT_CACHE"])
            mp.chdir(self.root)
            yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _path_with_fusekit(tmp: Path) -> str:
    """PATH with this interpreter's ``fusekit`` (and ``python``) first.

    The venv's console script when it exists; otherwise a shim running ``-m fusekit``
    with this interpreter, so a checkout without the script installed still tests the
    same ``main``.
    """
    bindir = Path(sys.executable).parent
    if not (bindir / "fusekit").is_file():
        shim = tmp / "bin"
        shim.mkdir(exist_ok=True)
        script = shim / "fusekit"
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fusekit "$@"\n')
        script.chmod(0o755)
        (shim / "python").symlink_to(sys.executable)
        bindir = shim
    return f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"


def _env(tmp: Path, cache: Path, *, one_thread: bool) -> dict[str, str]:
    env = {**os.environ, "PATH": _path_with_fusekit(tmp), "FUSEKIT_CACHE": str(cache)}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["TOKENIZERS_PARALLELISM"] = "false"
    if one_thread:  # tiny models: one thread is fastest and leaves the other core alone
        env["OMP_NUM_THREADS"] = "1"
    return env


def shrunk(node: Any) -> Any:
    """A recipe (or any part of one) with every integer named in ``SHRINK`` capped."""
    if isinstance(node, dict):
        return {
            k: min(v, SHRINK[k])
            if k in SHRINK and isinstance(v, int) and not isinstance(v, bool)
            else shrunk(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [shrunk(v) for v in node]
    return node


def accelerate_cpu_config() -> str:
    """docs/distributed.md's two-process CPU config, on a free port (the suite may run twice)."""
    block = next(
        i.text for i in doc_items()
        if i.file == "docs/distributed.md" and i.lang == "yaml" and "num_processes: 2" in i.text
    )  # fmt: skip
    return re.sub(r"main_process_port: \d+", f"main_process_port: {free_port()}", block)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model placeholders, built once: ``base/`` has the 16 layers ``--remove 8`` and
    ``--groups 8`` need; CALM pairs every 4th layer by default, so ``big/`` has 8 and
    ``small/`` 4; ``t/``, ``a/``, ``b/`` are FuseLLM's target and sources."""
    root = tmp_path_factory.mktemp("doc-models")
    save_llama(root / "base", seed=0, layers=16)
    save_llama(root / "big", seed=1, layers=8)
    save_llama(root / "small", seed=2, layers=4)
    for seed, name in enumerate(("t", "a", "b"), start=3):
        save_llama(root / name, seed=seed)
    return root


def _placeholders(root: Path, models: Path) -> None:
    for model in models.iterdir():
        shutil.copytree(model, root / model.name)
    write_corpus(root / "dc.jsonl", seed=0)
    write_corpus(root / "corpus.jsonl", seed=1)
    write_corpus(root / "heldout.jsonl", seed=2)
    paragraphs = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(6)]
    (root / "notes.txt").write_text("\n\n".join(paragraphs) + "\n")
    for name in ("RECIPE.yaml", "recipe.yaml"):
        (root / name).write_text(yaml.safe_dump(TINY_RECIPE, sort_keys=False))
    (root / "accelerate.yaml").write_text(accelerate_cpu_config())


def _workspace(
    factory: pytest.TempPathFactory, name: str, models: Path, cache: Path, **kw: Any
) -> Workspace:
    root = factory.mktemp(name)
    _placeholders(root, models)
    return Workspace(root, _env(root.parent, cache, one_thread=kw.pop("one_thread", True)), **kw)


@pytest.fixture(scope="module")
def fast_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fast tier's own FUSEKIT_CACHE: its toy from-scratch parents stay out of yours."""
    return tmp_path_factory.mktemp("doc-cache")


@pytest.fixture(scope="module")
def docs_ws(tmp_path_factory, tiny_models: Path, fast_cache: Path) -> Workspace:
    ws = _workspace(tmp_path_factory, "docs-ws", tiny_models, fast_cache, timeout=600)
    (ws.root / "recipes").symlink_to(REPO / "recipes", target_is_directory=True)
    return ws


@pytest.fixture(scope="module")
def shrunk_ws(tmp_path_factory, tiny_models: Path, fast_cache: Path) -> Workspace:
    ws = _workspace(tmp_path_factory, "shrunk-ws", tiny_models, fast_cache, timeout=600)
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        target = ws.root / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(shrunk(yaml.safe_load(path.read_text()))))
    return ws


@pytest.fixture(scope="module")
def full_ws(tmp_path_factory, tiny_models: Path) -> Workspace:
    """The slow tier: shipped recipes, the user's cache (parents trained once, as promised)."""
    from fusekit.io.cache import cache_root

    ws = _workspace(tmp_path_factory, "full-ws", tiny_models, cache_root(), timeout=3 * 3600,
                    one_thread=False)  # fmt: skip
    (ws.root / "recipes").symlink_to(REPO / "recipes", target_is_directory=True)
    return ws


@pytest.fixture(scope="module")
def gguf_ws(tmp_path_factory) -> Workspace:
    """The real tier: the GGUF files tests/real finds, under the names the docs use."""
    from fusekit.io.cache import cache_root
    from tests.real.conftest import english, gguf_paths

    root = tmp_path_factory.mktemp("gguf-ws")
    for file in gguf_paths().values():
        (root / file.name).symlink_to(file)
    rows = [json.dumps({"text": t}) + "\n" for t in english(2, 300)]
    (root / "heldout.jsonl").write_text("".join(rows))
    return Workspace(root, _env(root.parent, cache_root(), one_thread=False), timeout=1800)

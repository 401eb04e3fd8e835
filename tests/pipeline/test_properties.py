"""The refusal contract, searched for counter-examples rather than listed.

``test_refusals.py`` holds the cases someone thought of.  Here ``hypothesis``
generates recipes, data records and corruptions of a model folder, runs the
command a user would, and asserts for each: exit 0 with a complete result, or
exit 2 with ``fusekit: error:`` lines only (one, except for a recipe, whose
problems are listed a line each), no traceback, nothing at OUT, and
every input byte-identical.  The search is derandomised, so CI sees the same
examples every run and a failure reproduces.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.pipeline.conftest import Outcome, cli, write_corpus
from tests.pipeline.test_refusals import snapshot
from tests.training.conftest import WORDS

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@contextmanager
def workspace() -> Iterator[Path]:
    """A fresh folder per example (pytest's ``tmp_path`` is one per test, not per example)."""
    folder = Path(tempfile.mkdtemp(prefix="fusekit-prop-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def assert_contract(result: Outcome, out: Path, *, one_line: bool = True) -> None:
    """Exit 0, or exit 2 with error lines only; never a traceback or a half-written OUT."""
    event(f"exit {result.code}")  # --hypothesis-show-statistics: how often each outcome
    assert result.code in (0, 2), (result.code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "internal error" not in result.stderr, result.stderr[-3000:]
    if result.code == 2:
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("fusekit: error:")]
        assert errors, result.stderr
        if one_line:
            assert len(errors) == 1, result.stderr
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}.tmp-*"))


# ----------------------------------------------------------------- recipes

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["2GB", "0GB", "-1MB", "mined", "auto", "bf16", "fp8", "[", "{a: 1}"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TRAIN_KEYS = ["steps", "epochs", "lr", "batch_size", "seq_len", "precision", "schedule",
              "save_steps", "warmup_steps", "grad_accum", "data", "nosuch"]  # fmt: skip
TOP_KEYS = ["groups", "blocks_per_group", "remove", "slices", "every", "lambda", "sources",
            "augment", "anchor", "target", "model", "shard_size", "lora", "fusion", "align",
            "data", "output", "nosuch"]  # fmt: skip


@st.composite
def recipes(draw: Any, model: str, data: str) -> dict[str, Any]:
    """A plausible recipe with a few fields replaced by arbitrary values."""
    strategy = draw(st.sampled_from(
        ["block_expansion", "depth_upscaling", "calm", "fusellm", "finetune", "block-expansion",
         "merge_all"]))  # fmt: skip
    recipe: dict[str, Any] = {"strategy": strategy, "model": model}
    if strategy in ("block_expansion", "block-expansion"):
        recipe["groups"] = 2
    if strategy == "depth_upscaling":
        recipe["remove"] = 1
    if strategy == "calm":
        recipe = {"strategy": "calm", "anchor": model, "augment": [model], "every": 2}
    if strategy == "fusellm":
        recipe = {"strategy": "fusellm", "target": model, "sources": [model]}
    recipe["train"] = {"data": data, "steps": 2, "batch_size": 2, "seq_len": 16}
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=3, unique=True)):
        recipe[key] = draw(VALUES)
    for key in draw(st.lists(st.sampled_from(TRAIN_KEYS), max_size=3, unique=True)):
        recipe["train"][key] = draw(VALUES)
    if draw(st.booleans()):
        del recipe["train"]
    return recipe


@pytest.mark.parametrize("command", ["validate", "dry-run"])
def test_generated_recipes_keep_the_contract(command: str, models: dict[str, Path]) -> None:
    data = write_corpus(Path(tempfile.mkdtemp(prefix="fusekit-prop-data-")) / "c.jsonl")

    @SETTINGS
    @given(recipe=recipes(str(models["a"]), str(data)))
    def check(recipe: dict[str, Any]) -> None:
        with workspace() as tmp:
            path = tmp / "r.yaml"
            path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
            out = tmp / "out"
            inputs = [path, models["a"], data]
            before = snapshot(*inputs)
            if command == "validate":
                result = cli("validate", str(path))
            else:
                result = cli("run", str(path), "-o", str(out), "--dry-run")
            # a recipe's problems are listed one line each, by run as by validate
            assert_contract(result, out, one_line=False)
            assert not out.exists()  # neither command writes
            assert snapshot(*inputs) == before

    check()


# ----------------------------------------------------------------- data records

TEXT = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=30).map(" ".join),
    st.sampled_from(["", "  ", "\ud800", "a\udfffb", "\x00", "\u2028", "é" * 3]),
)
RECORDS = st.one_of(
    st.fixed_dictionaries({"text": TEXT}),
    st.fixed_dictionaries({"prompt": TEXT, "completion": TEXT}),
    st.dictionaries(st.sampled_from(["text", "prompt", "completion", "x"]), VALUES, max_size=3),
    VALUES,
)


def _jsonl(records: list[Any], junk: bytes) -> bytes:
    lines = [json.dumps(r).encode() for r in records]
    return b"\n".join(lines) + b"\n" + junk


@SETTINGS
@given(
    records=st.lists(RECORDS, max_size=6),
    junk=st.one_of(st.just(b""), st.binary(max_size=12)),
    suffix=st.sampled_from([".jsonl", ".json", ".txt"]),
)
def test_generated_data_keeps_the_contract(
    models: dict[str, Path], records: list[Any], junk: bytes, suffix: str
) -> None:
    """``fusekit eval`` on arbitrary records: a finite result, or one line naming the data."""
    with workspace() as tmp:
        file = tmp / f"d{suffix}"
        if suffix == ".json":
            file.write_bytes(json.dumps(records).encode() + junk)
        elif suffix == ".txt":
            file.write_bytes("\n\n".join(r for r in records if isinstance(r, str)).encode(
                "utf-8", "surrogatepass") + junk)  # fmt: skip
        else:
            file.write_bytes(_jsonl(records, junk))
        before = snapshot(file, models["a"])
        out = tmp / "result.json"
        result = cli("eval", str(models["a"]), "--data", str(file), "--json", str(out))
        assert_contract(result, out)
        if result.code == 0:
            value = json.loads(out.read_text())["value"]
            assert isinstance(value, float) and math.isfinite(value), value
        else:
            assert file.name in result.stderr
        assert snapshot(file, models["a"]) == before


# ----------------------------------------------------------------- corrupted model folders


@st.composite
def corruptions(draw: Any) -> tuple[str, Any]:
    """(file to damage, how): truncation, header bytes, replacement, removal."""
    kind = draw(st.sampled_from(["truncate", "header", "bytes", "replace", "remove"]))
    name = draw(st.sampled_from(["model.safetensors", "config.json", "tokenizer.json",
                                 "tokenizer_config.json"]))  # fmt: skip
    if kind == "truncate":
        return name, ("truncate", draw(st.floats(0, 0.999)))
    if kind in ("header", "bytes"):
        return name, (kind, draw(st.integers(0, 1 << 20)), draw(st.integers(0, 255)))
    if kind == "replace":
        content = draw(
            st.one_of(st.binary(max_size=64), VALUES.map(lambda v: json.dumps(v).encode()))
        )
        return name, ("replace", content)
    return name, ("remove",)


def _damage(file: Path, how: tuple[Any, ...]) -> None:
    raw = bytearray(file.read_bytes())
    if how[0] == "truncate":
        file.write_bytes(bytes(raw[: int(len(raw) * how[1])]))
    elif how[0] in ("header", "bytes"):
        # a safetensors file is its header's length, the JSON header, then tensor bytes
        # (where a changed byte can make a weight NaN)
        start = 8 + struct.unpack("<Q", bytes(raw[:8]))[0] if file.suffix == ".safetensors" else 0
        lo, hi = (0, start or len(raw)) if how[0] == "header" else (start, len(raw))
        if hi > lo:
            raw[lo + how[1] % (hi - lo)] = how[2]
        file.write_bytes(bytes(raw))
    elif how[0] == "replace":
        file.write_bytes(how[1])
    else:
        file.unlink()


@SETTINGS
@given(damage=st.lists(corruptions(), min_size=1, max_size=2))
def test_corrupted_model_folders_keep_the_contract(
    models: dict[str, Path], damage: list[tuple[str, Any]]
) -> None:
    """``fusekit eval`` of a damaged copy: a finite result, or one line naming the folder."""
    with workspace() as tmp:
        folder = Path(shutil.copytree(models["a"], tmp / "model"))
        for name, how in damage:
            if (folder / name).exists():
                _damage(folder / name, how)
        data = write_corpus(tmp / "h.jsonl")
        before = snapshot(folder, data)
        out = tmp / "result.json"
        result = cli("eval", str(folder), "--data", str(data), "--json", str(out))
        assert_contract(result, out)
        if result.code == 0:
            value = json.loads(out.read_text())["value"]
            assert isinstance(value, float) and math.isfinite(value), value
        else:
            assert str(folder) in result.stderr
        assert snapshot(folder, data) == before

"""Bad input as a new user gives it: one ``fusekit: error:`` line, exit 2, nothing written.

Every case breaks one thing — a model folder, a data file, a recipe, an output
path, training, evaluation — runs the command a user would type (in-process, so
the table stays fast), and checks the exit status, that stderr has exactly one
``fusekit: error:`` line naming the file or field, no traceback, nothing at OUT
and every input byte-identical afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import cli, recipe_for, save_llama, write_corpus, write_recipe


def snapshot(*paths: Path) -> dict[str, str]:
    """Content hash of every file under ``paths``: inputs must come out as they went in."""
    found: dict[str, str] = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


@dataclass
class Case:
    """``setup(tmp)`` returns the argv (OUT is ``tmp/out``) and the inputs it names."""

    setup: Callable[[Path, dict[str, Path]], tuple[list[str], list[Path]]]
    needles: tuple[str, ...]


# ----------------------------------------------------------------- model folders


def _copy(models: dict[str, Path], tmp: Path, name: str = "model") -> Path:
    return Path(shutil.copytree(models["a"], tmp / name))


def _expand(folder: Path, tmp: Path) -> list[str]:
    return ["fuse", "--strategy", "block_expansion", "--model", str(folder), "--groups", "2",
            "-o", str(tmp / "out")]  # fmt: skip


def _dus(folder: Path, tmp: Path) -> list[str]:
    return ["fuse", "--strategy", "depth_upscaling", "--model", str(folder), "--remove", "1",
            "-o", str(tmp / "out")]  # fmt: skip


def _surgery_on(mutate: Callable[[Path], None], command: Callable = _expand) -> Callable:
    def setup(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
        folder = _copy(models, tmp)
        mutate(folder)
        return command(folder, tmp), [folder]

    return setup


def _edit_config(**changes: object) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        cfg.update(changes)
        (folder / "config.json").write_text(json.dumps(cfg))

    return mutate


def _edit_state(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        state = load_file(folder / "model.safetensors")
        edit(state)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    return mutate


def _edit_bytes(edit: Callable[[bytearray], None]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        file = folder / "model.safetensors"
        raw = bytearray(file.read_bytes())
        edit(raw)
        file.write_bytes(bytes(raw))

    return mutate


def _nan_norm(state: dict) -> None:
    state["model.norm.weight"].fill_(float("nan"))


def _shrink_norm(state: dict) -> None:
    state["model.norm.weight"] = state["model.norm.weight"][:8].clone()


def _header_len(raw: bytearray) -> int:
    return struct.unpack("<Q", bytes(raw[:8]))[0]


def _bad_dtype(raw: bytearray) -> None:
    at = raw.index(b'"F32"', 8, 8 + _header_len(raw))
    raw[at : at + 5] = b'"F31"'


def _index_without_shard(folder: Path) -> None:
    keys = list(json.loads(_header_bytes(folder / "model.safetensors")))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in keys if k != "__metadata__"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _header_bytes(file: Path) -> bytes:
    raw = file.read_bytes()
    return raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]]


def _pickle_only(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


def _fake_gguf(tmp: Path) -> Path:
    (tmp / "fake.gguf").write_bytes(b"PK\x03\x04 not a model")
    return tmp / "fake.gguf"


def _small_embedding(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp / "small-vocab"
    cfg = json.loads((models["a"] / "config.json").read_text())
    cfg["vocab_size"] = 10  # the tokenizer has more ids than this
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k != "architectures"}))\
        .save_pretrained(folder)  # fmt: skip
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(models["a"] / name, folder / name)
    data = write_corpus(tmp / "corpus.jsonl")
    recipe = write_recipe(
        tmp / "r.yaml", recipe_for("block_expansion", {**models, "a": folder}, data)
    )
    return ["run", str(recipe), "-o", str(tmp / "out")], [folder, data, recipe]


def _no_tokenizer(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    folder = _copy(models, tmp)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    data = write_corpus(tmp / "corpus.jsonl")
    recipe = write_recipe(tmp / "r.yaml", recipe_for("finetune", {**models, "a": folder}, data))
    return ["run", str(recipe), "-o", str(tmp / "out")], [folder, data, recipe]


MODEL_CASES = {
    "no config.json": Case(_surgery_on(lambda f: (f / "config.json").unlink()), ("config.json",)),
    "config.json not JSON": Case(
        _surgery_on(lambda f: (f / "config.json").write_text('{"model_type": "llama",')),
        ("config.json", "not valid JSON", "line 1"),
    ),
    "config.json not JSON, --dry-run": Case(
        _surgery_on(
            lambda f: (f / "config.json").write_text("{,}"),
            lambda folder, tmp: [*_expand(folder, tmp), "--dry-run"],
        ),
        ("config.json", "not valid JSON"),
    ),
    "config.json not UTF-8": Case(
        _surgery_on(lambda f: (f / "config.json").write_bytes(b'{"model_type": "ll\xe1ma"}')),
        ("config.json", "not UTF-8"),
    ),
    "unknown model_type": Case(
        _surgery_on(_edit_config(model_type="no-such-arch")), ("config.json", "no-such-arch")
    ),
    "missing tensor, depth up-scaling": Case(
        _surgery_on(_edit_state(lambda s: s.pop("model.layers.2.mlp.up_proj.weight")), _dus),
        ("model.layers.2.mlp.up_proj.weight", "incomplete"),
    ),
    "missing tensor, block expansion": Case(
        _surgery_on(_edit_state(lambda s: s.pop("model.norm.weight"))), ("model.norm.weight",)
    ),
    "tensor of the wrong shape": Case(
        _surgery_on(_edit_state(_shrink_norm)), ("model.norm.weight", "[8]", "do not match")
    ),
    "config of another size": Case(
        _surgery_on(_edit_config(intermediate_size=128)), ("mlp", "do not match config.json")
    ),
    "safetensors header length past the end": Case(
        _surgery_on(_edit_bytes(lambda r: r.__setitem__(slice(0, 8), struct.pack("<Q", 10**9)))),
        ("model.safetensors", "header length"),
    ),
    "truncated safetensors": Case(
        _surgery_on(_edit_bytes(lambda r: r.__delitem__(slice(len(r) - 100, None)))),
        ("model.safetensors", "past the end of the file"),
    ),
    "unknown dtype code": Case(_surgery_on(_edit_bytes(_bad_dtype)), ("model.safetensors", "F31")),
    "header not JSON": Case(
        _surgery_on(_edit_bytes(lambda r: r.__setitem__(8, ord("x")))),
        ("model.safetensors", "not valid JSON"),
    ),
    "empty safetensors file": Case(
        _surgery_on(lambda f: (f / "model.safetensors").write_bytes(b"")),
        ("model.safetensors", "too short"),
    ),
    "index names a missing shard": Case(
        _surgery_on(_index_without_shard), ("model.safetensors.index.json", "model-00001-of-00002")
    ),
    "index not JSON": Case(
        _surgery_on(lambda f: (f / "model.safetensors.index.json").write_text("{")),
        ("model.safetensors.index.json", "not a valid safetensors index"),
    ),
    "pickled weights without allow_pickle": Case(
        _surgery_on(_pickle_only), ("pytorch_model.bin", "allow_pickle")
    ),
    "remote code without trust_remote_code": Case(
        _surgery_on(_edit_config(auto_map={"AutoModelForCausalLM": "m.M"})),
        ("auto_map", "trust_remote_code"),
    ),
    "a masked LM": Case(
        _surgery_on(_edit_config(architectures=["LlamaForSequenceClassification"])),
        ("LlamaForSequenceClassification", "not a causal language model"),
    ),
    "tokenizer larger than the embedding": Case(_small_embedding, ("20 tokens", "10 rows")),
    "no tokenizer for training": Case(_no_tokenizer, ("has no tokenizer",)),
    "model folder missing": Case(
        lambda tmp, m: (_expand(tmp / "nowhere", tmp), []), ("nowhere", "does not exist")
    ),
    "a .gguf that is not GGUF": Case(
        lambda tmp, m: (_expand(_fake_gguf(tmp), tmp), [tmp / "fake.gguf"]),
        ("fake.gguf", "not a GGUF file"),
    ),
    "convert of a file that is not GGUF": Case(
        lambda tmp, m: (
            ["convert", str(_fake_gguf(tmp)), "-o", str(tmp / "out")],
            [tmp / "fake.gguf"],
        ),
        ("fake.gguf", "not a GGUF file"),
    ),
    "model path is a file": Case(
        lambda tmp, m: (_expand(Path(shutil.copy(m["a"] / "config.json", tmp)), tmp), []),
        ("config.json", "is a file"),
    ),
}


# ----------------------------------------------------------------- data files


def _train_on(write: Callable[[Path], Path], strategy: str = "finetune") -> Callable:
    def setup(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
        data = write(tmp)
        recipe = write_recipe(tmp / "r.yaml", recipe_for(strategy, models, data))
        return ["run", str(recipe), "-o", str(tmp / "out")], [data, recipe, models["a"]]

    return setup


def _streamed(strategy: str, **train: Any) -> Callable:
    """A ``strategy`` recipe with ``train.streaming`` on and ``train`` changed."""

    def setup(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
        data = write_corpus(tmp / "c.jsonl")
        recipe = recipe_for(strategy, models, data)
        recipe["train"].update(streaming=True, **train)
        write_recipe(tmp / "r.yaml", recipe)
        return ["run", str(tmp / "r.yaml"), "-o", str(tmp / "out")], [data, tmp / "r.yaml"]

    return setup


def _file(name: str, content: bytes) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        (tmp / name).write_bytes(content)
        return tmp / name

    return write


def _fifo(tmp: Path) -> Path:
    """A named pipe with no writer: opening it would wait for ever."""
    os.mkfifo(tmp / "d.jsonl")
    return tmp / "d.jsonl"


def _link(name: str, target: str) -> Callable[[Path], Path]:
    def write(tmp: Path) -> Path:
        (tmp / name).symlink_to(target)
        return tmp / name

    return write


_LINE = json.dumps({"text": "the cat sat on the mat"}).encode() + b"\n"
_MASKED = json.dumps({"prompt": " ".join(["the"] * 40), "completion": "cat"}).encode() + b"\n"

DATA_CASES = {
    "jsonl not UTF-8": Case(
        _train_on(_file("d.jsonl", _LINE + b'{"text": "caf\xe9"}\n')),
        ("d.jsonl:2", "UTF-8"),
    ),
    "txt not UTF-8": Case(_train_on(_file("d.txt", b"caf\xe9 au lait")), ("d.txt", "UTF-8")),
    "empty txt": Case(_train_on(_file("d.txt", b"")), ("d.txt", "no text")),
    "whitespace-only jsonl": Case(
        _train_on(_file("d.jsonl", b'{"text": "  "}\n' * 3)), ("d.jsonl", "no text")
    ),
    "empty jsonl": Case(_train_on(_file("d.jsonl", b"\n")), ("d.jsonl", "no records")),
    "jsonl line not JSON": Case(
        _train_on(_file("d.jsonl", _LINE * 2 + b"{oops\n")), ("d.jsonl:3", "not valid JSON")
    ),
    "record without text": Case(
        _train_on(_file("d.jsonl", b'{"body": "x"}\n')), ("d.jsonl:1", "'text'")
    ),
    "json not a list": Case(_train_on(_file("d.json", b'{"text": "x"}')), ("d.json", "a list")),
    "json not JSON": Case(_train_on(_file("d.json", b"[{")), ("d.json", "not valid JSON")),
    "unknown data format": Case(
        _train_on(_file("d.csv", b"text\nx\n")), ("d.csv", "unknown format")
    ),
    "nothing predicted": Case(
        _train_on(_file("d.jsonl", _MASKED * 4)),
        ("no example has a trained token within train.seq_len=16", "raise train.seq_len"),
    ),
    "CALM data not UTF-8": Case(
        _train_on(_file("d.jsonl", b'{"text": "\xff"}\n'), "calm"), ("d.jsonl", "UTF-8")
    ),
    "FuseLLM data empty": Case(_train_on(_file("d.txt", b""), "fusellm"), ("d.txt", "no text")),
    "lone surrogate in a record": Case(
        _train_on(_file("d.jsonl", _LINE + b'{"text": "ok \\ud800 then"}\n')),
        ("d.jsonl:2", "'text'", "lone surrogate", "\\ud800"),
    ),
    "lone surrogate in a prompt, CALM": Case(
        _train_on(_file("d.jsonl", b'{"prompt": "\\udfff", "completion": "x"}\n'), "calm"),
        ("d.jsonl", "'prompt'", "lone surrogate"),
    ),
    "data path is a FIFO": Case(_train_on(_fifo), ("d.jsonl", "not a regular file")),
    "data path links to /dev/zero": Case(
        _train_on(_link("d.jsonl", "/dev/zero")), ("d.jsonl", "not a regular file")
    ),
    "eval data is a FIFO": Case(
        lambda tmp, m: (["eval", str(m["a"]), "--data", str(_fifo(tmp))], [m["a"]]),
        ("d.jsonl", "not a regular file"),
    ),
    "eval data with a lone surrogate": Case(
        lambda tmp, m: (
            [
                "eval",
                str(m["a"]),
                "--data",
                str(_file("h.jsonl", b'{"text": "a \\ud83d b"}\n')(tmp)),
            ],
            [m["a"]],
        ),
        ("h.jsonl:1", "lone surrogate"),
    ),
}


# ----------------------------------------------------------------- recipes


def _recipe_text(text: bytes | str) -> Callable:
    def setup(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
        body = text if isinstance(text, bytes) else text.format(a=models["a"]).encode()
        (tmp / "r.yaml").write_bytes(body)
        return ["run", str(tmp / "r.yaml"), "-o", str(tmp / "out")], [tmp / "r.yaml"]

    return setup


def _accelerate(text: str, *, scored: bool = False, **train: Any) -> Callable:
    """A training run launched with ``--accelerate-config`` holding ``text`` (``train``:
    settings of the recipe's ``train:``; ``scored``: the training data is an eval set too)."""

    def setup(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
        (tmp / "accel.yaml").write_text(text)
        data = write_corpus(tmp / "c.jsonl")
        recipe = recipe_for("finetune", models, data)
        recipe["train"].update(train)
        if scored:
            recipe["data"] = {"eval": [str(data)]}
        recipe = write_recipe(tmp / "r.yaml", recipe)
        argv = ["run", str(recipe), "-o", str(tmp / "out"), "--accelerate-config"]
        return [*argv, str(tmp / "accel.yaml")], [tmp / "accel.yaml", recipe, data, models["a"]]

    return setup


RECIPE_CASES = {
    "duplicate key": Case(
        _recipe_text("strategy: block_expansion\nmodel: {a}\ngroups: 2\ngroups: 4\n"),
        ("'groups' appears twice",),
    ),
    "recipe not UTF-8": Case(_recipe_text(b"strategy: finetune\nname: caf\xe9\n"), ("not UTF-8",)),
    "YAML syntax error": Case(
        _recipe_text("strategy: block_expansion\nmodel: [{a}\n"), ("r.yaml", "line")
    ),
    "unknown key": Case(
        _recipe_text("strategy: block_expansion\nmodel: {a}\ngroups: 2\ngropus: 4\n"), ("gropus",)
    ),
    "unknown strategy": Case(_recipe_text("strategy: merge_all\nmodel: {a}\n"), ("merge_all",)),
    "zero shard size": Case(
        _recipe_text("strategy: depth_upscaling\nmodel: {a}\nremove: 1\nshard_size: 0GB\n"),
        ("shard_size", "must be positive"),
    ),
    "negative steps": Case(
        _recipe_text("strategy: block_expansion\nmodel: {a}\ngroups: 2\ntrain: {{steps: -1}}\n"),
        ("train.steps",),
    ),
    "list nested 10,000 deep": Case(
        _recipe_text("strategy: block_expansion\nmodel: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        ("r.yaml", "nested more than 64 levels"),
    ),
    "streaming by epochs": Case(
        _streamed("finetune", steps=None, epochs=1), ("train", "streaming has no epochs", "steps")
    ),
    "streaming for CALM": Case(
        _streamed("calm"), ("train.streaming", "calm", "before training", "drop train.streaming")
    ),
    "accelerate config not YAML": Case(
        _accelerate("distributed_type: [MULTI_CPU\n"), ("accel.yaml", "not valid YAML", "line")
    ),
    "accelerate config with num_processes 0": Case(
        _accelerate("distributed_type: MULTI_CPU\nnum_processes: 0\n"),
        ("accel.yaml", "num_processes", "≥ 1", "0"),
    ),
    "accelerate config with an unknown distributed_type": Case(
        _accelerate("distributed_type: MULTI_TPU\nnum_processes: 2\n"),
        ("accel.yaml", "MULTI_TPU", "MULTI_CPU"),
    ),
    "accelerate config with machine_rank past num_machines": Case(
        _accelerate("distributed_type: MULTI_CPU\nnum_machines: 2\nmachine_rank: 2\n"),
        ("accel.yaml", "machine_rank", "2"),
    ),
    "accelerate config not a mapping": Case(
        _accelerate("- MULTI_CPU\n"), ("accel.yaml", "mapping")
    ),
    "accelerate config with FSDP version 1": Case(
        _accelerate("distributed_type: FSDP\nnum_processes: 2\nfsdp_config: {fsdp_version: 1}\n"),
        ("accel.yaml", "FSDP2 only", "fsdp_version: 2"),
    ),
    "FSDP activation checkpointing and train.gradient_checkpointing": Case(
        _accelerate(
            "distributed_type: FSDP\nnum_processes: 2\nfsdp_config: {fsdp_version: 2, "
            "fsdp_activation_checkpointing: true}\n",
            gradient_checkpointing=True,
        ),
        ("accel.yaml", "fsdp_activation_checkpointing", "train.gradient_checkpointing", "keep one"),
    ),
    "train.eval_steps with several processes": Case(
        _accelerate("distributed_type: MULTI_CPU\nnum_processes: 2\n", scored=True, eval_steps=2),
        ("accel.yaml", "train.eval_steps", "one process"),
    ),
    "train.eval_steps without data.eval": Case(
        _recipe_text(
            "strategy: finetune\nmodel: {a}\n"
            "train: {{steps: 2, eval_steps: 1, data: {{task: english, max_chars: 1000}}}}\n"
        ),
        ("r.yaml", "train.eval_steps", "data.eval"),
    ),
    "accelerate config with ZeRO-3": Case(
        _accelerate(
            "distributed_type: DEEPSPEED\nnum_processes: 2\ndeepspeed_config: {zero_stage: 3}\n"
        ),
        ("accel.yaml", "ZeRO-3"),
    ),
    "recipe missing": Case(
        lambda tmp, m: (["run", str(tmp / "none.yaml"), "-o", str(tmp / "out")], []),
        ("none.yaml",),
    ),
    "bad --set path": Case(
        lambda tmp, m: (
            [*_expand(m["a"], tmp), "--set", "train.nosuch.deep=1"],
            [m["a"]],
        ),
        ("train",),
    ),
}


# ----------------------------------------------------------------- outputs


def _existing_out(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("mine")
    return _expand(models["a"], tmp), [models["a"], tmp / "out"]


def _out_inside_input(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    folder = _copy(models, tmp)
    argv = _expand(folder, tmp)
    argv[-1] = str(folder / "out")
    return argv, [folder]


def _out_is_input(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    folder = _copy(models, tmp)
    argv = [*_expand(folder, tmp)[:-1], str(folder), "--overwrite"]
    return argv, [folder]


def _eval(tmp: Path, models: dict[str, Path], *extra: str) -> list[str]:
    data = write_corpus(tmp / "heldout.jsonl")
    return ["eval", str(models["a"]), "--data", str(data), *extra]


OUTPUT_CASES = {
    "output exists": Case(_existing_out, ("out", "--overwrite")),
    "output inside its input": Case(_out_inside_input, ("inside",)),
    "output is its input": Case(_out_is_input, ("input",)),
    "output under a file": Case(
        lambda tmp, m: (
            [*_expand(m["a"], tmp)[:-1], str(Path(shutil.copy(m["a"] / "config.json", tmp)) / "o")],
            [m["a"]],
        ),
        ("not a folder",),
    ),
    "--json into a folder": Case(
        lambda tmp, m: (_eval(tmp, m, "--json", str(tmp)), [m["a"]]), ("is a folder",)
    ),
    "--json on a full disk": Case(
        lambda tmp, m: (_eval(tmp, m, "--json", "/dev/full"), [m["a"]]),
        ("/dev/full", "no space left"),
    ),
}


# ----------------------------------------------------------------- training and eval


def _nan_model(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    folder = _copy(models, tmp, "nan")
    _edit_state(lambda s: s["model.norm.weight"].fill_(float("nan")))(folder)
    data = write_corpus(tmp / "corpus.jsonl")
    recipe = write_recipe(tmp / "r.yaml", recipe_for("finetune", {**models, "a": folder}, data))
    return ["run", str(recipe), "-o", str(tmp / "out")], [folder, data, recipe]


def _nan_eval(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    """Evaluation of a model with a NaN weight: a score of nan is no result."""
    folder = _copy(models, tmp, "nan")
    _edit_state(_nan_norm)(folder)
    return _eval(tmp, {"a": folder}), [folder]


def _skip_everything(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    argv, inputs = _nan_model(tmp, models)
    return [*argv, "--set", "train.skip_nonfinite=true"], inputs


def _composition(tmp: Path, models: dict[str, Path]) -> Path:
    data = write_corpus(tmp / "c.jsonl")
    recipe = recipe_for("calm", models, data)
    recipe["train"]["steps"] = 0
    path = write_recipe(tmp / "calm.yaml", recipe)
    out = tmp / "calm-out"
    assert cli("run", str(path), "-o", str(out)).code == 0
    return out


def _damaged_composition(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    out = _composition(tmp, models)
    file = out / "composition.safetensors"
    file.write_bytes(file.read_bytes()[:-16])
    data = write_corpus(tmp / "heldout.jsonl")
    return ["eval", str(out), "--data", str(data)], [out]


def _changed_base(tmp: Path, models: dict[str, Path]) -> tuple[list[str], list[Path]]:
    out = _composition(tmp, models)
    other = tmp / "other"
    save_llama(other, seed=5)
    data = write_corpus(tmp / "heldout.jsonl")
    return ["eval", str(out), "--data", str(data), "--base", f"anchor={other}"], [out, other]


TRAINING_EVAL_CASES = {
    "NaN loss": Case(_nan_model, ("loss became nan at step 1",)),
    "every step non-finite under skip_nonfinite": Case(_skip_everything, ("every one of the 6",)),
    "eval of a folder with no model": Case(
        lambda tmp, m: (["eval", str(tmp), "--data", str(write_corpus(tmp / "h.jsonl"))], []),
        ("not a model folder",),
    ),
    "eval of a model whose scores are NaN": Case(_nan_eval, ("nan", "bpb = nan", "not finite")),
    "eval with an unknown metric": Case(
        lambda tmp, m: (_eval(tmp, m, "--metric", "bleu"), [m["a"]]), ("bleu",)
    ),
    "eval data not UTF-8": Case(
        lambda tmp, m: (
            ["eval", str(m["a"]), "--data", str(_file("h.jsonl", b'{"text": "\xff"}\n')(tmp))],
            [m["a"]],
        ),
        ("h.jsonl", "UTF-8"),
    ),
    "damaged composition.safetensors": Case(
        _damaged_composition, ("composition.safetensors", "damaged")
    ),
    "composition on another base": Case(_changed_base, ("anchor", "has changed")),
    "--base without NAME=": Case(
        lambda tmp, m: (_eval(tmp, m, "--base", "somewhere"), [m["a"]]), ("NAME=DIR",)
    ),
}

CASES = {**MODEL_CASES, **DATA_CASES, **RECIPE_CASES, **OUTPUT_CASES, **TRAINING_EVAL_CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line(name: str, models, tmp_path: Path) -> None:
    case = CASES[name]
    argv, inputs = case.setup(tmp_path, models)
    before = snapshot(*inputs)
    result = cli(*argv)
    assert result.code == 2, (result.code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("fusekit: error:")]
    assert len(lines) == 1, result.stderr
    for needle in case.needles:
        assert needle in lines[0], lines[0]
    assert ".tmp-" not in lines[0]  # never a temporary folder that is gone
    out = tmp_path / "out"
    if name != "output exists":
        assert not out.exists()
    assert not (tmp_path / ".out.checkpoints").exists()
    assert snapshot(*inputs) == before


def test_the_suite_covers_every_class() -> None:
    assert len(CASES) >= 40
    assert all(len(group) >= 5 for group in (MODEL_CASES, DATA_CASES, RECIPE_CASES,
                                             OUTPUT_CASES, TRAINING_EVAL_CASES))  # fmt: skip


def test_os_errors_name_the_path(models, tmp_path: Path, monkeypatch) -> None:
    """A read-only filesystem (simulated: tests run as root, who may write anywhere)."""
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    result = cli(*_expand(models["a"], tmp_path))
    assert result.code == 2 and "Traceback" not in result.stderr
    assert f"fusekit: error: {tmp_path}: the filesystem is read-only" in result.stderr


def test_a_fusekit_bug_ends_in_a_traceback_and_a_pointer(models, tmp_path: Path, monkeypatch):
    import fusekit.api

    def broken(*args, **kwargs):
        raise RuntimeError("internal invariant broken")

    monkeypatch.setattr(fusekit.api, "run", broken)
    result = cli(*_expand(models["a"], tmp_path))
    assert result.code == 1
    assert (
        "Traceback" in result.stderr and "RuntimeError: internal invariant broken" in result.stderr
    )
    assert "this is a bug in fusekit" in result.stderr.splitlines()[-1]

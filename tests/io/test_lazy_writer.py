"""Lazy reading and sharded writing: names, index, metadata, and a lossless round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fusekit.errors import ModelIOError
from fusekit.io.lazy import LazyCheckpoint
from fusekit.io.loading import load_causal_lm
from fusekit.io.provenance import copy_tokenizer_and_generation_config
from fusekit.io.sizes import parse_size
from fusekit.io.writer import ShardedWriter
from tests.tiny import make_tiny_model


def _rewrite(src: Path, dst: Path, max_shard_bytes: int, *, declared: bool) -> list[str]:
    ckpt = LazyCheckpoint(src)
    dst.mkdir()
    writer = ShardedWriter(dst, max_shard_bytes)
    if declared:
        for name in ckpt:
            writer.declare(name, ckpt.shape(name), ckpt.dtype(name))
    for name in ckpt:
        writer.add(name, ckpt.get_tensor(name))
    files = writer.close()
    (dst / "config.json").write_text((src / "config.json").read_text())
    copy_tokenizer_and_generation_config(src, dst)
    return files


@pytest.mark.parametrize(
    ("arch", "declared"),
    [("llama", True), ("llama", False), ("qwen3", True), ("gpt2", True), ("gemma2", True)],
)
def test_sharded_round_trip_gives_identical_logits(
    tmp_path: Path, arch: str, declared: bool
) -> None:
    src = make_tiny_model(arch, tmp_path / "src")
    files = _rewrite(src, tmp_path / "dst", 40_000, declared=declared)
    assert len(files) > 2, "a small shard limit must produce several shards"
    index = json.loads((tmp_path / "dst" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert set(index["weight_map"]) == set(LazyCheckpoint(src).keys())

    ids = torch.randint(3, 300, (2, 11), generator=torch.Generator().manual_seed(0))
    a, b = load_causal_lm(src), load_causal_lm(tmp_path / "dst")
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_lazy_metadata_reads_headers_only(tmp_path: Path) -> None:
    src = make_tiny_model("llama", tmp_path / "m")
    ckpt = LazyCheckpoint(src)
    name = "model.layers.2.mlp.down_proj.weight"
    reference = load_file(str(src / "model.safetensors"))
    assert ckpt.shape(name) == tuple(reference[name].shape)
    assert ckpt.dtype(name) == torch.float32
    assert ckpt.nbytes(name) == reference[name].numel() * 4
    assert torch.equal(ckpt.get_tensor(name), reference[name])
    assert torch.equal(ckpt.get_slice(name)[1:3], reference[name][1:3])
    assert ckpt.config["model_type"] == "llama"
    assert len(ckpt) == len(reference)


def test_lazy_reads_sharded_checkpoints(tmp_path: Path) -> None:
    src = make_tiny_model("llama", tmp_path / "m")
    _rewrite(src, tmp_path / "sharded", 30_000, declared=True)
    a, b = LazyCheckpoint(src), LazyCheckpoint(tmp_path / "sharded")
    assert sorted(a.keys()) == sorted(b.keys())
    for name in a:
        assert torch.equal(a.get_tensor(name), b.get_tensor(name))


def test_single_shard_is_named_model_safetensors(tmp_path: Path) -> None:
    with ShardedWriter(tmp_path / "out") as w:
        w.add("a", torch.ones(3))
        w.add("b", torch.zeros(2, 2, dtype=torch.bfloat16))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors"]
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="pt") as fh:
        assert fh.metadata() == {"format": "pt"}
        assert torch.equal(fh.get_tensor("b"), torch.zeros(2, 2, dtype=torch.bfloat16))


def test_shard_names_and_index(tmp_path: Path) -> None:
    w = ShardedWriter(tmp_path, max_shard_bytes=100)
    for i in range(5):
        w.add(f"t{i}", torch.full((20,), float(i)))  # 80 bytes: one tensor per shard
    files = w.close()
    assert files == [f"model-0000{k}-of-00005.safetensors" for k in range(1, 6)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5 * 80
    assert index["weight_map"]["t3"] == "model-00004-of-00005.safetensors"
    assert not list(tmp_path.glob(".shard-*"))
    assert torch.equal(load_file(str(tmp_path / files[3]))["t3"], torch.full((20,), 3.0))


def test_mixed_dtypes_stay_aligned_and_loadable(tmp_path: Path) -> None:
    tensors = {
        "odd_bf16": torch.randn(3, dtype=torch.bfloat16),
        "f32": torch.randn(5),
        "i8": torch.arange(7, dtype=torch.int8),
        "f64": torch.randn(2, dtype=torch.float64),
        "flag": torch.tensor([True, False]),
    }
    w = ShardedWriter(tmp_path)
    for name, t in tensors.items():
        w.declare(name, tuple(t.shape), t.dtype)
    for name, t in tensors.items():
        w.add(name, t)
    w.close()
    loaded = load_file(str(tmp_path / "model.safetensors"))
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t)


def test_declared_writer_refuses_mismatch_and_missing(tmp_path: Path) -> None:
    w = ShardedWriter(tmp_path / "a")
    w.declare("x", (2,), torch.float32)
    w.declare("y", (2,), torch.float32)
    with pytest.raises(ValueError, match="declared"):
        w.add("x", torch.ones(3))
    w.add("x", torch.ones(2))
    with pytest.raises(ValueError, match="twice"):
        w.add("x", torch.ones(2))
    with pytest.raises(RuntimeError, match="never added"):
        w.close()
    w.abort()


def test_parse_size() -> None:
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1GiB") == 2**30
    assert parse_size(123) == 123
    with pytest.raises(ValueError, match="cannot read size"):
        parse_size("lots")


def test_lazy_checkpoint_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelIOError, match="no safetensors"):
        LazyCheckpoint(tmp_path)


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_raw_copies_and_constants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool
) -> None:
    if not kernel_copy:  # a filesystem without copy_file_range: the chunked fallback

        def unsupported(*args: object) -> int:
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr("os.copy_file_range", unsupported, raising=False)
    src = make_tiny_model("gemma2", tmp_path / "src")
    ckpt = LazyCheckpoint(src)
    name = "model.layers.1.mlp.up_proj.weight"
    w = ShardedWriter(tmp_path / "out", max_shard_bytes=10_000)
    w.declare("copied", ckpt.shape(name), ckpt.dtype(name))
    w.declare("gain_bf16", (5,), torch.bfloat16)
    w.declare("gain_f32", (3,), torch.float32)
    w.declare("zeros_f16", (4, 4), torch.float16)
    info = ckpt.info(name)
    w.add_from_file("copied", info.file, info.start)
    w.add_constant("gain_bf16", -1.0)
    w.add_constant("gain_f32", -1.0)
    w.add_constant("zeros_f16", 0.0)
    files = w.close()
    loaded: dict[str, torch.Tensor] = {}
    for f in files:
        loaded.update(load_file(str(tmp_path / "out" / f)))
    assert torch.equal(loaded["copied"], ckpt.get_tensor(name))
    assert torch.equal(loaded["gain_bf16"], torch.full((5,), -1.0, dtype=torch.bfloat16))
    assert torch.equal(loaded["gain_f32"], torch.full((3,), -1.0))
    assert torch.equal(loaded["zeros_f16"], torch.zeros(4, 4, dtype=torch.float16))


def test_constant_must_be_representable(tmp_path: Path) -> None:
    w = ShardedWriter(tmp_path)
    w.declare("x", (2,), torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16"):
        w.add_constant("x", 1.0001)
    w.abort()

"""A damaged ``.gguf`` file, a bad ``--dtype``, an existing output and a full disk are
refused with one line, before anything is dequantised and with nothing left behind.

The files are copies of a tiny valid GGUF llama (written with the ``gguf`` package's
``GGUFWriter``), truncated at several points or with one count or dimension patched,
fed to the commands a user types: ``fusekit convert``, and ``fusekit run`` and
``validate`` with a recipe naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.pipeline.conftest import Outcome, cli, recipe_for, write_corpus, write_recipe

VOCAB, HIDDEN, INTER, HEADS = 16, 8, 16, 2


def write_tiny_llama(path: Path) -> Path:
    """A one-layer llama with F32 tensors and a sentencepiece-style vocabulary."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(32)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(INTER)
    w.add_head_count(HEADS)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>", *(chr(ord("a") + i) for i in range(VOCAB - 3))])
    w.add_token_scores([0.0] * 3 + [-float(i) for i in range(VOCAB - 3)])
    w.add_token_types([2, 3, 3] + [1] * (VOCAB - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    rng = np.random.default_rng(0)
    head = HIDDEN // HEADS
    shapes = {"token_embd": (VOCAB, HIDDEN), "output_norm": (HIDDEN,), "output": (VOCAB, HIDDEN),
              "blk.0.attn_norm": (HIDDEN,), "blk.0.attn_q": (HIDDEN, HIDDEN),
              "blk.0.attn_k": (head, HIDDEN), "blk.0.attn_v": (head, HIDDEN),
              "blk.0.attn_output": (HIDDEN, HIDDEN), "blk.0.ffn_norm": (HIDDEN,),
              "blk.0.ffn_gate": (INTER, HIDDEN), "blk.0.ffn_up": (INTER, HIDDEN),
              "blk.0.ffn_down": (HIDDEN, INTER)}  # fmt: skip
    for name, shape in shapes.items():
        w.add_tensor(f"{name}.weight", rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _layout(file: Path) -> tuple[int, int, int]:
    """Where the tensor table starts, where the first tensor's first dimension is, and
    where the tensor data starts (read with gguf's own reader from the valid file)."""
    import gguf

    reader = gguf.GGUFReader(file)
    first = reader.tensors[0].field
    dim = first.offset + 8 + len(first.parts[1]) + 4  # name length, name, dimension count
    return first.offset, dim, reader.data_offset


def _truncated(where: Callable[[tuple[int, int, int]], int]) -> Callable[[bytes, Path], bytes]:
    return lambda raw, file: raw[: where(_layout(file))]


def _patched(at: Callable[[tuple[int, int, int]], int], value: int) -> Callable:
    def edit(raw: bytes, file: Path) -> bytes:
        out, start = bytearray(raw), at(_layout(file))
        out[start : start + 8] = struct.pack("<Q", value)
        return bytes(out)

    return edit


DAMAGE = {
    "cut inside the fixed header": (_truncated(lambda at: 16), ("truncated", "24-byte header")),
    "cut inside the metadata": (_truncated(lambda at: 200), ("truncated", "metadata entry")),
    "cut inside the tensor table": (
        _truncated(lambda at: at[0] + 30),
        ("truncated", "tensor 1 of 12 in the tensor table"),
    ),
    "cut inside the tensor data": (
        _truncated(lambda at: at[2] + 100),
        ("truncated", "claims 12 tensors", "the file has"),
    ),
    "tensor count 2**62": (
        _patched(lambda at: 8, 2**62),
        ("corrupt", "4,611,686,018,427,387,904 tensors"),
    ),
    "a dimension of 2**40": (
        _patched(lambda at: at[1], 2**40),
        ("corrupt", "'token_embd.weight' of shape 1,099,511"),
    ),
}


def _damaged(tiny: Path, tmp: Path, name: str) -> Path:
    edit = DAMAGE[name][0]
    file = tmp / "damaged.gguf"
    file.write_bytes(edit(tiny.read_bytes(), tiny))
    return file


def _digest(*files: Path) -> list[str]:
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def _one_line(result: Outcome, *needles: str) -> str:
    """The refusal contract: exit 2, one ``fusekit: error:`` line, no traceback."""
    assert result.code == 2, (result.code, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("fusekit: error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert ".tmp-" not in lines[0] and "(unknown path)" not in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_dequantising(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any refusal here must come before transformers reads the file."""
    import fusekit.io.gguf

    def refuse(file: Path) -> None:
        raise AssertionError(f"{file} was dequantised before it was checked")

    monkeypatch.setattr(fusekit.io.gguf, "_load", refuse)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FUSEKIT_CACHE", str(root))
    return root


@pytest.mark.parametrize("name", list(DAMAGE))
def test_convert_names_the_damage(name, tiny, tmp_path, cache, no_dequantising) -> None:
    file = _damaged(tiny, tmp_path, name)
    before = _digest(file)
    result = cli("convert", str(file), "-o", str(tmp_path / "out"))
    _one_line(result, str(file), *DAMAGE[name][1])
    assert not (tmp_path / "out").exists() and not cache.exists()
    assert _digest(file) == before


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("name", ["cut inside the tensor data", "a dimension of 2**40"])
def test_a_recipe_naming_a_damaged_file(name, command, tiny, tmp_path, cache, no_dequantising):
    file = _damaged(tiny, tmp_path, name)
    recipe = write_recipe(
        tmp_path / "r.yaml", {"strategy": "block_expansion", "model": str(file), "groups": 1}
    )
    before = _digest(file, recipe)
    argv = ["run", str(recipe), "-o", str(tmp_path / "out")] if command == "run" else [
        "validate", str(recipe)]  # fmt: skip
    _one_line(cli(*argv), str(file), *DAMAGE[name][1])
    assert not (tmp_path / "out").exists() and not cache.exists()
    assert _digest(file, recipe) == before


def test_every_file_is_checked_before_the_first_is_converted(
    tiny, tmp_path, cache, no_dequantising
):
    damaged = _damaged(tiny, tmp_path, "cut inside the tensor data")
    models = {"a": tiny, "b": damaged}  # the valid anchor comes first
    recipe = write_recipe(
        tmp_path / "r.yaml", recipe_for("calm", models, write_corpus(tmp_path / "c.jsonl"))
    )
    _one_line(cli("validate", str(recipe)), str(damaged), "truncated")
    assert not cache.exists()


@pytest.mark.parametrize("dtype", ["int8", "bool", "auto"])
def test_convert_refuses_a_dtype_that_is_not_floating(dtype, tiny, tmp_path, no_dequantising):
    _one_line(
        cli("convert", str(tiny), "-o", str(tmp_path / "out"), "--dtype", dtype),
        repr(dtype), "float32, bfloat16, float16",
    )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_convert_refuses_an_existing_output_first(tiny, tmp_path, no_dequantising) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _one_line(cli("convert", str(tiny), "-o", str(tmp_path / "out")), "out", "--overwrite")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_a_valid_file_converts(tiny, tmp_path) -> None:
    from fusekit.io.gguf import conversion_record

    result = cli("convert", str(tiny), "-o", str(tmp_path / "out"), "--dtype", "bfloat16")
    assert result.code == 0, result.stderr[-3000:]
    assert conversion_record(tmp_path / "out")["dtype"] == "bfloat16"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary sibling left


def _full_disk_in_safetensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """What safetensors raises when the disk fills: not an OSError, the errno in text."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")  # fmt: skip

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)


def _full_disk_in_the_temporary_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError naming a file inside the temporary folder, which is gone afterwards."""
    from transformers import PreTrainedModel

    def full(self, folder, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", f"{folder}/model.safetensors")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)


def _full_disk_without_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed ``write`` names no file at all."""
    from transformers import PreTrainedModel

    def full(self, folder, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)


FULL_DISKS = [_full_disk_in_safetensors, _full_disk_in_the_temporary_folder,
              _full_disk_without_a_name]  # fmt: skip


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("fill", FULL_DISKS, ids=lambda f: f.__name__.removeprefix("_full_disk_"))
def test_a_full_disk_while_caching_leaves_no_folder(
    command, fill, tiny, tmp_path, cache, monkeypatch
):
    fill(monkeypatch)
    recipe = write_recipe(
        tmp_path / "r.yaml", {"strategy": "block_expansion", "model": str(tiny), "groups": 1}
    )
    argv = ["run", str(recipe), "-o", str(tmp_path / "out")] if command == "run" else [
        "validate", str(recipe)]  # fmt: skip
    line = _one_line(cli(*argv), "no space left")
    assert line.startswith(f"fusekit: error: {cache / 'gguf' / 'tiny-'}")
    assert not cache.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fill", FULL_DISKS, ids=lambda f: f.__name__.removeprefix("_full_disk_"))
def test_a_full_disk_while_converting_names_the_output(fill, tiny, tmp_path, monkeypatch):
    fill(monkeypatch)
    out = tmp_path / "models" / "tiny"
    line = _one_line(cli("convert", str(tiny), "-o", str(out)), "no space left")
    assert line.startswith((f"fusekit: error: {out}: ", f"fusekit: error: {out}/"))
    assert not (tmp_path / "models").exists()

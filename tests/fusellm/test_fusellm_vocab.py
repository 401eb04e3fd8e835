"""Vocabulary mapping: bytes, space markers, specials, EM vs MinED, the disk cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fusekit.strategies.fusellm import vocab as vocab_mod
from fusekit.strategies.fusellm.vocab import (
    byte_decoder,
    compute_vocab_map,
    default_cache_dir,
    map_vocab,
    token_table,
)


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _id(tok: Any, token: str) -> int:
    idx = tok.convert_tokens_to_ids(token)
    assert idx is not None and idx != tok.unk_token_id, token
    return int(idx)


def test_byte_decoder_is_gpt2_table() -> None:
    table = byte_decoder()
    assert len(table) == 256 and sorted(table.values()) == list(range(256))
    assert table["Ġ"] == 0x20 and table["Ċ"] == 0x0A and table["A"] == 0x41


def test_byte_tokens_map_to_each_other(bpe: Any, sp: Any) -> None:
    to_sp = compute_vocab_map(bpe, sp)
    to_bpe = compute_vocab_map(sp, bpe)
    tab = "".join(k for k, v in byte_decoder().items() if v == 0x09)  # "ĉ"
    assert "\t" not in sp.get_vocab()  # so the tab byte exists only as <0x09>
    assert to_sp[_id(bpe, tab)] == _id(sp, "<0x09>")
    assert to_bpe[_id(sp, "<0x09>")] == _id(bpe, tab)
    assert to_bpe[_id(sp, "<0x0A>")] == _id(bpe, "Ċ")
    # The newline is also an ordinary SentencePiece token: that one is preferred.
    assert sp.convert_ids_to_tokens(int(to_sp[_id(bpe, "Ċ")])) == "\n"
    # é is the bytes C3 A9: two byte characters in byte-level BPE, one in SentencePiece.
    src, tgt = token_table(sp), token_table(bpe)
    assert src.canon[_id(sp, "é")] == tgt.canon[_id(bpe, "Ã")] + tgt.canon[_id(bpe, "©")]
    assert to_sp[_id(bpe, "Ã")] == _id(sp, "<0xC3>")


def test_space_markers_and_specials(bpe: Any, sp: Any) -> None:
    to_sp = compute_vocab_map(bpe, sp, "em")
    assert to_sp[_id(bpe, "Ġreturn")] == _id(sp, "▁return")
    for role in ("bos", "eos", "pad", "unk"):
        assert to_sp[getattr(bpe, f"{role}_token_id")] == getattr(sp, f"{role}_token_id")


def test_em_leaves_unmatched_tokens_unmapped_and_mined_fills_them(bpe: Any, wp: Any) -> None:
    em = compute_vocab_map(wp, bpe, "em")
    mined = compute_vocab_map(wp, bpe, "mined")
    ordinary = [i for i, c in enumerate(token_table(wp).canon) if c is not None]
    assert any(em[i] < 0 for i in ordinary)
    assert all(mined[i] >= 0 for i in ordinary)
    both = [i for i in ordinary if em[i] >= 0]
    assert np.array_equal(em[both], mined[both])  # exact matches come first either way


def _brute_mined(source: Any, target: Any) -> dict[int, int]:
    """The paper's MinED, spelled out: for every source token EM leaves unmapped, the
    target token at minimum Levenshtein distance over the whole (non-special) target
    vocabulary, case-sensitive; ``min`` keeps the first, so ties go to the lowest id."""
    em = compute_vocab_map(source, target, "em")
    src, tgt = token_table(source), token_table(target)
    choices = [(j, c) for j, c in enumerate(tgt.canon) if c is not None]
    return {
        i: min(choices, key=lambda choice: _levenshtein(query, choice[1]))[0]
        for i, query in enumerate(src.canon)
        if query is not None and em[i] < 0
    }


@pytest.mark.parametrize(
    "pair", [("sp", "bpe"), ("bpe", "sp"), ("wp", "bpe"), ("sp", "wp")], ids="-".join
)
def test_mined_equals_brute_force_edit_distance(
    pair: tuple[str, str], request: pytest.FixtureRequest
) -> None:
    source, target = (request.getfixturevalue(name) for name in pair)
    expected = _brute_mined(source, target)
    assert len(expected) > 20
    mined = compute_vocab_map(source, target, "mined")
    got = {i: int(mined[i]) for i in expected}
    assert got == expected


def _word_level(tokens: list[str], scheme: str) -> Any:
    """A tokenizer whose vocabulary is exactly the four specials and ``tokens``, in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *tokens])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if scheme == "bytelevel":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
    else:
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def test_mined_is_case_sensitive() -> None:
    # Lower-cased, " mi" and "cu" would be one edit from " I" and "C" (which come first);
    # as spelled they are one edit from " mp" and "nu" and two from " I" and "C".
    source = _word_level(["▁mi", "cu", "▁the", "<0x0A>"], "metaspace")
    target = _word_level(["ĠI", "C", "Ġmp", "nu", "Ġthe", "Ċ"], "bytelevel")
    vmap = compute_vocab_map(source, target)
    names = [target.convert_ids_to_tokens(int(vmap[_id(source, t)])) for t in ("▁mi", "cu")]
    assert names == ["Ġmp", "nu"]
    assert vmap[_id(source, "▁the")] == _id(target, "Ġthe")  # marker swap, exact
    assert vmap[_id(source, "<0x0A>")] == _id(target, "Ċ")  # byte token, exact
    expected = _brute_mined(source, target)
    assert {i: int(vmap[i]) for i in expected} == expected


def test_same_tokenizer_maps_to_identity(sp: Any) -> None:
    vmap = compute_vocab_map(sp, sp)
    assert np.array_equal(vmap, np.arange(len(sp)))


def test_cache_is_keyed_and_reused(
    bpe: Any, sp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = map_vocab(bpe, sp, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(vocab_mod, "compute_vocab_map", boom)
    assert np.array_equal(map_vocab(bpe, sp, cache_dir=tmp_path), first)
    monkeypatch.undo()
    map_vocab(bpe, sp, "em", cache_dir=tmp_path)
    map_vocab(sp, bpe, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 3  # method and direction are part of the key


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "vocab_maps"
    monkeypatch.delenv("FUSEKIT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "fusekit" / "vocab_maps"

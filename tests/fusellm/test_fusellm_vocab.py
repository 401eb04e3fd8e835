"""Vocabulary mapping: bytes, space markers, specials, EM vs MinED, the disk cache."""

from __future__ import annotations

import random
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


def test_mined_agrees_with_brute_force_edit_distance(bpe: Any, sp: Any) -> None:
    mined = compute_vocab_map(sp, bpe, "mined")
    em = compute_vocab_map(sp, bpe, "em")
    src, tgt = token_table(sp), token_table(bpe)
    todo = [i for i, c in enumerate(src.canon) if c is not None and em[i] < 0]
    assert len(todo) > 20
    choices = [(j, c.lower()) for j, c in enumerate(tgt.canon) if c is not None]
    for i in random.Random(0).sample(todo, 20):
        query = src.canon[i].lower()
        best = min(_levenshtein(query, c) for _, c in choices)
        got = mined[i]
        assert _levenshtein(query, tgt.canon[got].lower()) == best  # ties aside
        first = next(j for j, c in choices if _levenshtein(query, c) == best)
        assert got == first  # and ties go to the lowest id, like the reference


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

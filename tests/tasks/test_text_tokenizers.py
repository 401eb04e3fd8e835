"""Tokenizers trained in-process: round trips, offsets, specials, persistence."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from fusekit.errors import DataError
from fusekit.tasks.special import BYTE_TOKENS
from fusekit.tasks.tokenizers import train_tokenizer


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character → byte table, rebuilt independently of the library."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes, strict=True)}


BYTE_DECODER = gpt2_byte_decoder()


def token_bytes(token: str, kind: str) -> bytes:
    """The bytes of text a token stands for, from its string alone."""
    if kind == "bpe":
        return bytes(BYTE_DECODER[ch] for ch in token)
    if token in BYTE_TOKENS:
        return bytes([int(token[3:5], 16)])
    return token.replace("▁", " ").encode()


def check_offsets(tok, text: str, kind: str, dummy_prefix: bool = False) -> None:
    """Offsets tile the text, and each span's characters are exactly its tokens' bytes.

    Tokens whose spans overlap (byte pieces of one multi-byte character) are
    checked together.
    """
    enc = tok(text, return_offsets_mapping=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == "<bos>" and enc["offset_mapping"][0] == (0, 0)
    groups: list[list] = []  # [start, end, bytes]
    for token, (start, end) in zip(tokens[1:], enc["offset_mapping"][1:], strict=True):
        piece = token_bytes(token, kind)
        if groups and start < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], end)
            groups[-1][2] += piece
        else:
            groups.append([start, end, piece])
    position = 0
    for i, (start, end, piece) in enumerate(groups):
        assert start == position, (text, tokens)
        expected = text[start:end]
        if dummy_prefix and i == 0 and not text.startswith(" "):
            expected = " " + expected  # the prepended "▁" has no source character
        assert piece.decode() == expected, (text[start:end], tokens)
        position = end
    assert position == len(text)


@pytest.fixture(scope="module")
def all_tokenizers(bpe, metaspace, metaspace_prefixed):
    return {
        "bpe": (bpe, "bpe", False),
        "metaspace": (metaspace, "metaspace", False),
        "prefixed": (metaspace_prefixed, "metaspace", True),
    }


@pytest.mark.parametrize("name", ["bpe", "metaspace"])
def test_round_trip_is_exact(name, all_tokenizers, sample_texts):
    tok, _, _ = all_tokenizers[name]
    for text in sample_texts:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_dummy_prefix_round_trips_except_a_leading_space(metaspace_prefixed, sample_texts):
    for text in sample_texts:
        decoded = metaspace_prefixed.decode(
            metaspace_prefixed(text)["input_ids"], skip_special_tokens=True
        )
        if text.startswith(" "):
            assert decoded == text[1:]  # the known SentencePiece exception
        else:
            assert decoded == text
    assert metaspace_prefixed.convert_ids_to_tokens(metaspace_prefixed("def f")["input_ids"])[
        1
    ].startswith("▁")


@pytest.mark.parametrize("name", ["bpe", "metaspace", "prefixed"])
def test_offsets_cover_the_tokens_text(name, all_tokenizers, sample_texts):
    tok, kind, prefixed = all_tokenizers[name]
    for text in sample_texts:
        if text:
            check_offsets(tok, text, kind, dummy_prefix=prefixed)


def test_markers_and_byte_fallback(bpe, metaspace):
    text = "def f(x):\n    return x\n"
    bpe_tokens = bpe.convert_ids_to_tokens(bpe(text)["input_ids"])
    meta_tokens = metaspace.convert_ids_to_tokens(metaspace(text)["input_ids"])
    assert "Ġreturn" in bpe_tokens and any("Ċ" in t for t in bpe_tokens)
    assert "▁return" in meta_tokens and "▁" in meta_tokens  # each indentation space alone
    assert meta_tokens.count("<0x0A>") == 2  # newlines only as byte tokens, as in Llama
    assert not any("\n" in t for t in metaspace.get_vocab())
    assert not any("Ġ" in t for t in meta_tokens) and not any("▁" in t for t in bpe_tokens)
    # Characters never seen in training fall back to bytes, never to <unk>.
    rare = metaspace("ǅ😀")["input_ids"]
    assert metaspace.unk_token_id not in rare
    assert metaspace.convert_ids_to_tokens(rare)[1:] == [
        "<0xC7>",
        "<0x85>",
        "<0xF0>",
        "<0x9F>",
        "<0x98>",
        "<0x80>",
    ]


def test_special_tokens(bpe, metaspace):
    for tok in (bpe, metaspace):
        assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<bos>", "<eos>")
        assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
        ids = tok("hello world")["input_ids"]
        assert ids[0] == 1 and 2 not in ids  # BOS added, EOS left to the caller
        assert tok("")["input_ids"] == [1]
        assert tok("a", "b")["input_ids"][0] == 1
        assert tok("hello", add_special_tokens=False)["input_ids"][0] != 1
    assert bpe.unk_token is None
    assert (metaspace.unk_token, metaspace.unk_token_id) == ("<unk>", 3)
    vocab = metaspace.get_vocab()
    assert [vocab[b] for b in BYTE_TOKENS] == list(range(4, 260))
    assert "<0x0A>" not in metaspace.all_special_tokens
    # Byte tokens are text, not specials: skipping specials keeps them.
    assert metaspace.decode(metaspace("a\né")["input_ids"], skip_special_tokens=True) == "a\né"


def test_vocab_size_is_as_requested_and_kinds_differ(bpe, metaspace, training_texts):
    assert len(bpe) == 1000 and len(metaspace) == 1000
    smaller = train_tokenizer("bpe", training_texts, 600)
    assert len(smaller) == 600
    text = "The interpreter imports the module and runs it."
    assert len(smaller(text)["input_ids"]) > len(bpe(text)["input_ids"])
    assert set(bpe.get_vocab()) != set(metaspace.get_vocab())


def test_training_is_deterministic(training_texts, bpe, metaspace):
    assert (
        train_tokenizer("bpe", training_texts, 1000).backend_tokenizer.to_str()
        == bpe.backend_tokenizer.to_str()
    )
    assert (
        train_tokenizer("metaspace", training_texts, 1000, seed=5).backend_tokenizer.to_str()
        == metaspace.backend_tokenizer.to_str()
    )


@pytest.mark.parametrize("name", ["bpe", "metaspace", "prefixed"])
def test_save_and_reload(name, all_tokenizers, sample_texts, tmp_path):
    tok = all_tokenizers[name][0]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again.get_vocab() == tok.get_vocab()
    assert again.all_special_tokens == tok.all_special_tokens
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id, again.unk_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
        tok.unk_token_id,
    )
    for text in sample_texts[:8]:
        a = tok(text, return_offsets_mapping=True)
        b = again(text, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"] and a["offset_mapping"] == b["offset_mapping"]
        assert again.decode(b["input_ids"], skip_special_tokens=True) == tok.decode(
            a["input_ids"], skip_special_tokens=True
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "wordpiece", "texts": ["abc"], "vocab_size": 1000}, "bpe, metaspace"),
        ({"kind": "bpe", "texts": ["abc"], "vocab_size": 100}, "too small"),
        ({"kind": "metaspace", "texts": ["abc"], "vocab_size": 300}, "too small"),
        ({"kind": "bpe", "texts": [], "vocab_size": 1000}, "empty"),
        ({"kind": "bpe", "texts": ["abc"], "vocab_size": 1000, "dummy_prefix": True}, "metaspace"),
        ({"kind": "bpe", "texts": ["abc"], "vocab_size": "1000"}, "integer"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs, match):
    with pytest.raises(DataError, match=match):
        train_tokenizer(**kwargs)

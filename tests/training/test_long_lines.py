"""A long line costs memory by the megabyte, not by the gigabyte.

A fast tokenizer keeps strings and offsets for every token of what it is given;
a single 50 MB line handed to it whole took ~9 GB.  Text now reaches the tokenizer
in ``segments`` cut where its pre-tokenizer splits anyway, so the ids are the
whole text's and no call sees more than ``SEGMENT_CHARS`` characters.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from fusekit.data import causal_lm as data_module
from fusekit.data.causal_lm import CausalLMDataset, chunk_texts, segments, special_prefix
from tests.tiny import make_tokenizer

WORDS = ["the", "cat", "sat", "on", "a", "mat,", "and", "dog", "ran", "(home)", "42", "x=1;"]


def _text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    seps = [" ", " ", "  ", " \n ", "\n ", ", "]  # a space starts every word
    return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(n_words))


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
@pytest.mark.parametrize("size", [20, 50, 333])
def test_segments_tokenise_to_the_whole_texts_ids(kind: str, size: int) -> None:
    tok = make_tokenizer(320, kind)
    text = _text(400)
    pieces = list(segments(text, size))
    assert "".join(pieces) == text and all(len(p) <= size for p in pieces)
    assert all(p.startswith(" ") for p in pieces[1:])  # cut where the pre-tokenizer splits
    joined = [i for p in pieces for i in tok(p, add_special_tokens=False)["input_ids"]]
    assert joined == tok(text, add_special_tokens=False)["input_ids"]


def test_a_word_longer_than_a_segment_is_cut_at_the_size() -> None:
    assert list(segments("x" * 25, 10)) == ["x" * 10, "x" * 10, "x" * 5]
    assert list(segments("", 10)) == [""]


class _Counting:
    """A tokenizer that records the longest string it was handed."""

    def __init__(self, tok):
        self.tok, self.longest = tok, 0

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def __call__(self, text, **kwargs):
        for t in [text] if isinstance(text, str) else text:
            self.longest = max(self.longest, len(t))
        batch = text if isinstance(text, list) else [text]
        self.longest = max(self.longest, sum(len(t) for t in batch))
        return self.tok(text, **kwargs)


def test_no_tokenizer_call_sees_more_than_a_segment(monkeypatch) -> None:
    monkeypatch.setattr(data_module, "SEGMENT_CHARS", 500)
    text = _text(3000)
    assert len(text) > 10 * 500
    counting = _Counting(make_tokenizer(320, "bytelevel"))
    ds = CausalLMDataset([{"text": text}], counting, seq_len=16)
    chunks = chunk_texts([text, text], counting, seq_len=16)
    assert 0 < counting.longest <= 500
    plain = make_tokenizer(320, "bytelevel")
    ids = plain(text, add_special_tokens=False)["input_ids"]
    skip = len(special_prefix(plain))
    assert [t for i in range(len(ds)) for t in ds[i]["input_ids"][skip:]] == ids[
        : len(ds) * (16 - skip)
    ]
    assert "".join(chunks).startswith(text[:1000])


def test_the_arrow_cache_tokenises_a_long_line_a_segment_at_a_time(monkeypatch, tmp_path) -> None:
    """The cached path calls the tokenizer as the in-memory one does, with the same ids."""
    from fusekit.data.tokenized import tokenized_examples

    monkeypatch.setattr(data_module, "SEGMENT_CHARS", 500)
    monkeypatch.setenv("FUSEKIT_CACHE", str(tmp_path))
    text = _text(3000)
    counting = _Counting(make_tokenizer(320, "bytelevel"))
    arrow = tokenized_examples([{"text": text}, {"text": text}], counting, seq_len=16)
    assert 0 < counting.longest <= 500
    memory = CausalLMDataset([{"text": text}, {"text": text}], make_tokenizer(320, "bytelevel"), 16)
    assert [arrow[i]["input_ids"] for i in range(len(arrow))] == [
        memory[i]["input_ids"] for i in range(len(memory))
    ]


def _prepending(split: bool) -> Any:
    """A Llama-2-style tokenizer: a normaliser that puts ``▁`` in front of every input,
    so a piece cut from mid-text gains a marker the whole text does not have."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
    )
    if split:  # merges stay inside words, as SentencePiece's do
        backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)
    corpus = [_text(2000, seed) for seed in range(3)]
    corpus.append("the cat sat on the mat x = 1 and y = 2 Hello world again")
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"]))  # fmt: skip
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize(("split", "gained"), [(True, 1), (False, None)])
def test_a_prepending_normaliser_still_gives_the_whole_texts_ids(
    split: bool, gained: int | None, monkeypatch
) -> None:
    """With merges inside words the extra marker of each cut is dropped; with merges
    across words no cut is safe and the text is tokenised whole."""
    from fusekit.data.causal_lm import continuation, token_stream

    monkeypatch.setattr(data_module, "SEGMENT_CHARS", 500)
    tok = _prepending(split)
    assert continuation(tok) == gained
    text = _text(3000)
    expected = [*tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert token_stream(tok, [text]).tolist() == expected

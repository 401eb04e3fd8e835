"""The arithmetic of the metrics, apart from any model."""

from __future__ import annotations

import math

import pytest

from fusekit.evaluation.metrics import (
    accuracy,
    bits_per_byte,
    choice_scores,
    clean_prediction,
    is_exact_match,
    perplexity,
)


def test_bits_per_byte_is_nats_over_bytes_over_ln2() -> None:
    assert bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0, rel=1e-15)
    # a uniform model over 256 byte values costs exactly 8 bits per byte
    assert bits_per_byte(7 * math.log(256), 7) == pytest.approx(8.0, rel=1e-15)


def test_perplexity_is_exp_mean_nll() -> None:
    assert perplexity(3 * math.log(50), 3) == pytest.approx(50.0, rel=1e-12)


@pytest.mark.parametrize(
    "call", [lambda: bits_per_byte(1.0, 0), lambda: perplexity(1.0, 0), lambda: accuracy(0, 0)]
)
def test_empty_inputs_are_refused(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_accuracy() -> None:
    assert accuracy(3, 4) == 0.75


def test_exact_match_strips_whitespace_only() -> None:
    assert is_exact_match("  42\n", " 42")
    assert not is_exact_match("42.", "42")
    assert not is_exact_match("4 2", "42")


def test_stop_strings_cut_the_prediction() -> None:
    assert clean_prediction(" 42\nQ: next", stop=["\n", "Q:"]) == "42"
    assert clean_prediction("a;b", stop=["", ";"]) == "a"
    assert is_exact_match(" paris. rome", "paris", stop=["."])


def test_a_one_line_reference_is_compared_with_the_first_line() -> None:
    # a base model answers a demonstration-prompted question, then starts the next line
    assert is_exact_match(" 11\n7 + 2 = 9", "11")
    assert not is_exact_match(" 12\n11", "11")
    assert is_exact_match("\n11\n3", " 11")  # surrounding whitespace goes first
    assert is_exact_match("a\nb\nc", "a\nb\nc")
    assert not is_exact_match("a\nb\nd", "a\nb\nc")  # a multi-line reference is whole


def test_choice_scores_normalise_by_bytes() -> None:
    assert choice_scores(-6.0, 3) == (-6.0, -2.0)
    assert choice_scores(-6.0, len("é".encode())) == (-6.0, -3.0)

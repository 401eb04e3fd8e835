"""The task registry: names, records, tokenizers, errors, and a cheap import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fusekit.tasks as tasks
from fusekit.errors import DataError
from fusekit.tasks import TASKS, KVConfig, kv_examples, task_examples, task_tokenizer


def test_task_names():
    assert list(TASKS) == [
        "kv_substitution",
        "numeric_arithmetic",
        "kv_arithmetic",
        "key_exposure",
        "kv_lookup",
        "kv_tag",
        "code",
        "english",
        "mixed",
        "stdlib_chat",
    ]
    assert all(TASKS.values())


def test_import_is_cheap():
    script = (
        "import sys, fusekit.tasks\n"
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    root = Path(tasks.__file__).parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == ""


def test_kv_records_match_kv_examples_and_heldout_is_another_stream():
    train = task_examples("kv_arithmetic", keys="held_in", n=200, seed=3)
    assert train == kv_examples("kv_arithmetic", 200, keys="held_in", seed=3)
    heldout = task_examples("kv_arithmetic", split="heldout", keys="held_in", n=200, seed=3)
    assert heldout != train and set(heldout[0]) == {"prompt", "completion"}
    assert len(task_examples("numeric_arithmetic")) == tasks.DEFAULT_KV_EXAMPLES
    wide = task_examples("kv_substitution", n=50, kv={"value_max": 99})
    assert wide == kv_examples("kv_substitution", 50, cfg=KVConfig(value_max=99))


def test_text_records():
    records = task_examples("english", split="heldout", max_chars=20_000)
    assert records and all(set(r) == {"text"} for r in records)
    assert sum(len(r["text"]) for r in records) <= 20_000
    assert len(task_examples("code", n=3)) == 3
    mixed = task_examples("mixed", max_chars=100_000, seed=1)
    assert [r["text"] for r in mixed] == tasks.mixed_documents(
        ["code", "english"], "train", 100_000, 1
    )


def test_kv_tokenizer_from_the_registry():
    tok = task_tokenizer("kv_substitution")
    assert len(tok) == 317 and tok.bos_token == "<bos>"
    assert len(task_tokenizer("kv_arithmetic", kv={"num_keys": 20})) == 37


def test_text_tokenizers_default_kinds_and_cache():
    code = task_tokenizer("code")
    english = task_tokenizer("english")
    assert len(code) == tasks.DEFAULT_VOCAB_SIZE and len(english) == tasks.DEFAULT_VOCAB_SIZE
    assert any(t.startswith("Ġ") for t in code.get_vocab())
    assert any(t.startswith("▁") for t in english.get_vocab())
    again = task_tokenizer("code")
    assert again is not code
    assert again.backend_tokenizer.to_str() == code.backend_tokenizer.to_str()
    other = task_tokenizer("code", kind="metaspace", vocab_size=800)
    assert len(other) == 800 and "<0x0A>" in other.get_vocab()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: task_examples("poetry"), "valid names: kv_substitution, .*mixed"),
        (lambda: task_tokenizer("poetry"), "valid names"),
        (lambda: task_examples("code", split="validation"), "train, heldout"),
        (lambda: task_examples("code", keys="held_in"), "KV tasks only"),
        (lambda: task_examples("english", kv={"num_keys": 10}), "KV tasks only"),
        (lambda: task_examples("kv_arithmetic", max_chars=100), "text tasks only"),
        (lambda: task_examples("kv_arithmetic", n=-2), "non-negative"),
        (lambda: task_examples("kv_arithmetic", keys="some"), "all, held_in, held_out"),
        (lambda: task_examples("kv_arithmetic", kv={"keys": 3}), "unknown kv field"),
        (lambda: task_tokenizer("kv_arithmetic", vocab_size=500), "fixed KV tokenizer"),
        (lambda: task_tokenizer("code", kind="wordpiece"), "bpe, metaspace"),
        (lambda: task_tokenizer("code", vocab_size=[1]), "integer"),
        (lambda: task_tokenizer("code", kv={"num_keys": 3}), "KV tasks only"),
    ],
)
def test_bad_arguments_raise_one_line_data_errors(call, match):
    with pytest.raises(DataError, match=match) as info:
        call()
    assert "\n" not in str(info.value)

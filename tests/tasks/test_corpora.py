"""The offline code and English domains: content, splits, budgets, mixing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusekit.errors import DataError
from fusekit.tasks import corpora
from fusekit.tasks.corpora import domain_documents, domain_size, mixed_documents


def digest(docs: list[str]) -> str:
    return hashlib.sha256("\x00".join(docs).encode()).hexdigest()


@pytest.mark.parametrize("domain", ["code", "english"])
def test_train_and_heldout_never_share_a_document(domain):
    train = domain_documents(domain, "train")
    heldout = domain_documents(domain, "heldout")
    assert train and heldout
    assert not set(train) & set(heldout)
    assert len(set(train)) == len(train)  # deduplicated
    share = len(heldout) / (len(train) + len(heldout))
    assert 0.04 < share < 0.2  # about one document in ten


def test_domains_look_like_their_names():
    code = domain_documents("code", max_chars=500_000)
    english = domain_documents("english", max_chars=200_000)
    code_text, english_text = "".join(code), "".join(english)
    assert code_text.count("def ") / len(code_text) > 10 * english_text.count("def ") / len(
        english_text
    )
    assert " the " in english_text and english_text.count(" the ") / len(english_text) > 0.005
    # pydoc_data is the English domain, not part of the code domain.
    marker = "Assert statements are a convenient way"
    assert any(marker in doc for doc in domain_documents("english"))
    assert not any(marker in doc for doc in domain_documents("code"))


def test_english_has_no_long_code_listings():
    for doc in domain_documents("english") + domain_documents("english", "heldout"):
        run = 0
        for line in doc.split("\n"):
            run = run + 1 if line.lstrip().startswith((">>>", "...")) else 0
            assert run <= 8, doc[:200]


def test_long_literal_blocks_are_dropped_but_prose_and_short_ones_stay():
    code_block = "\n".join(f"   x{i} = f({i})" for i in range(10))
    prose_block = "\n".join(f"   an indented note that goes on, line {i}" for i in range(10))
    short_block = "   y = 1\n   z = 2"
    text = (
        f"Intro:\n\n{code_block}\n\nAfter.\n\nA note:\n\n{prose_block}\n\n"
        f"Short:\n\n{short_block}\n\nEnd."
    )
    cleaned = corpora._drop_long_literals(text)
    assert "x3 = f(3)" not in cleaned
    assert "Intro:" in cleaned and "After." in cleaned
    assert prose_block in cleaned and short_block in cleaned and cleaned.endswith("End.")


def test_code_walk_skips_tests_site_packages_and_generated_files(tmp_path, monkeypatch):
    files = {
        "os.py": "import sys\n" * 20,
        "json/decoder.py": "def decode(s):\n    return s\n" * 5,
        "test/test_os.py": "def test():\n    pass\n",
        "unittest/test/test_case.py": "class T: pass\n",
        "site-packages/torch/__init__.py": "import torch\n",
        "idlelib/editor.py": "idle = 1\n",
        "encodings/cp1252.py": "table = 1\n",
        "pydoc_data/topics.py": "topics = {}\n",
        "_sysconfigdata__linux.py": "build_time_vars = {}\n",
        "notes.txt": "not python\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.setattr(corpora.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    assert sorted(corpora._code_sources()) == sorted([files["json/decoder.py"], files["os.py"]])
    assert [m for m, _ in corpora.code_files()] == ["os", "json.decoder"]


def test_budget_caps_characters_and_keeps_a_prefix():
    small = domain_documents("code", max_chars=50_000)
    large = domain_documents("code", max_chars=400_000)
    assert sum(map(len, small)) <= 50_000 and sum(map(len, large)) <= 400_000
    assert sum(map(len, large)) > 390_000  # only the last document is cut, at a line end
    assert small[:-1] == large[: len(small) - 1]
    assert large[len(small) - 1].startswith(small[-1])
    assert all(doc.endswith("\n") for doc in large)
    # A budget smaller than the first document still yields text.
    tiny = domain_documents("code", max_chars=100)
    assert tiny and 0 < sum(map(len, tiny)) <= 100


def test_documents_are_deterministic_across_processes():
    here = digest(domain_documents("english")) + digest(domain_documents("code", "heldout"))
    script = (
        "import hashlib; from fusekit.tasks.corpora import domain_documents as d\n"
        "h = lambda x: hashlib.sha256('\\x00'.join(x).encode()).hexdigest()\n"
        "print(h(d('english')) + h(d('code', 'heldout')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=str(Path(corpora.__file__).parents[2]),
    )
    assert out.stdout.strip() == here


def test_two_million_characters_of_code_are_there():
    """Enough standard-library code for a from-scratch parent's budget (speed is a
    benchmark's business, never a test's: a loaded machine would fail a threshold)."""
    corpora._split_documents.cache_clear()
    docs = domain_documents("code", max_chars=2_000_000)
    assert sum(map(len, docs)) > 1_990_000


def test_mixed_takes_equal_shares_and_seed_only_reorders():
    mixed = mixed_documents(["code", "english"], "train", 200_000, seed=0)
    code = domain_documents("code", max_chars=100_000)
    english = domain_documents("english", max_chars=100_000)
    assert sorted(mixed) == sorted(code + english)
    assert mixed != code + english  # interleaved, not concatenated
    reordered = mixed_documents(["code", "english"], "train", 200_000, seed=1)
    assert sorted(reordered) == sorted(mixed) and reordered != mixed
    assert mixed_documents(["code", "english"], "train", 200_000, seed=0) == mixed


def test_mixed_without_budget_is_balanced_by_the_smaller_domain():
    mixed = mixed_documents(["code", "english"], "heldout")
    english = set(domain_documents("english", "heldout"))
    eng_chars = sum(len(d) for d in mixed if d in english)
    code_chars = sum(len(d) for d in mixed if d not in english)
    assert eng_chars == domain_size("english", "heldout")
    assert eng_chars - 20_000 < code_chars <= eng_chars


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: domain_documents("poetry"), "code, english"),
        (lambda: domain_documents("code", "test"), "train, heldout"),
        (lambda: domain_documents("code", max_chars=0), "max_chars"),
        (lambda: mixed_documents([], "train"), "at least one"),
        (lambda: mixed_documents(["code", "code"], "train"), "twice"),
        (lambda: mixed_documents(["code", "english"], "train", 1), "too small"),
    ],
)
def test_bad_arguments_raise_data_error(call, match):
    with pytest.raises(DataError, match=match):
        call()

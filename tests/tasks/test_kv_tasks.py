"""The CALM key-value tasks: tables, splits, text form, arithmetic, tokenizer."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from transformers import AutoTokenizer

from fusekit.errors import DataError
from fusekit.tasks.kv import (
    KV_TASKS,
    KVConfig,
    demonstrations,
    key_split,
    key_values,
    kv_examples,
    kv_tokenizer,
    majority_baseline,
)

KEY = re.compile(r"^k\d+$")


def parse_number(tokens: list[str]) -> int:
    """Independent reading of the digit-by-digit form: optional '-' then digits."""
    sign = -1 if tokens and tokens[0] == "-" else 1
    digits = tokens[1:] if sign < 0 else tokens
    assert digits and all(len(d) == 1 and d.isdigit() for d in digits), tokens
    return sign * int("".join(digits))


def parse_expression(text: str) -> tuple[list[str], list[str]]:
    """Split 'a + b - c' (terms may be keys or multi-token numbers) into terms and signs."""
    terms: list[list[str]] = [[]]
    signs = ["+"]
    for tok in text.split():
        # A '-' starts a new term unless the current term is still empty (a sign).
        if tok in "+-" and terms[-1]:
            signs.append(tok)
            terms.append([])
        else:
            terms[-1].append(tok)
    return [" ".join(t) for t in terms], signs


def evaluate(terms: list[str], signs: list[str], table: dict[str, int]) -> int:
    total = 0
    for term, sign in zip(terms, signs, strict=True):
        value = table[term] if KEY.match(term) else parse_number(term.split())
        total += value if sign == "+" else -value
    return total


def test_defaults_match_the_spec():
    cfg = KVConfig()
    assert (cfg.num_keys, cfg.value_max, cfg.min_operands, cfg.max_operands) == (300, 9, 2, 3)
    assert cfg.held_in_fraction == 0.2 and cfg.seed == 0


def test_values_are_fixed_by_seed_and_in_range():
    cfg = KVConfig()
    table = key_values(cfg)
    assert list(table) == [f"k{i}" for i in range(300)]
    assert set(table.values()) == set(range(10))  # 300 draws cover every value
    assert key_values(KVConfig()) == table
    assert key_values(KVConfig(seed=1)) != table
    wide = key_values(KVConfig(value_max=99))
    assert max(wide.values()) > 9 and all(0 <= v <= 99 for v in wide.values())


def test_key_split_is_disjoint_twenty_percent_and_seeded():
    cfg = KVConfig()
    held_in, held_out = key_split(cfg)
    assert len(held_in) == 60 and len(held_out) == 240
    assert not set(held_in) & set(held_out)
    assert set(held_in) | set(held_out) == set(key_values(cfg))
    assert key_split(KVConfig()) == (held_in, held_out)
    assert key_split(KVConfig(seed=3))[0] != held_in
    assert len(key_split(KVConfig(num_keys=10, held_in_fraction=0.5))[0]) == 5


def test_balanced_split_holds_every_value_evenly_and_keeps_the_rest():
    text = {"style": "text", "shots": 2, "num_keys": 100, "min_operands": 2, "max_operands": 2}
    plain, balanced = KVConfig(**text), KVConfig(**text, balanced_split=True)
    table = key_values(plain)
    # the plain draw of 20 of these 100 keys misses values: the case the knob is for
    assert set(table[k] for k in key_split(plain)[0]) != set(range(10))
    held_in, held_out = key_split(balanced)
    assert len(held_in) == 20 and set(held_in) | set(held_out) == set(table)
    assert not set(held_in) & set(held_out)
    assert sorted(Counter(table[k] for k in held_in).values()) == [2] * 10
    # the table, the demonstrations and every stream over all keys are unchanged
    assert key_values(balanced) == table and demonstrations(balanced) == demonstrations(plain)
    assert kv_examples("kv_lookup", 30, cfg=balanced) == kv_examples("kv_lookup", 30, cfg=plain)
    assert key_split(KVConfig(**text, balanced_split=True, seed=1))[0] != held_in
    # 60 held-in keys of 300 over ten values: six of each
    wide = KVConfig(balanced_split=True)
    assert Counter(key_values(wide)[k] for k in key_split(wide)[0]) == dict.fromkeys(range(10), 6)


@pytest.mark.parametrize("task", KV_TASKS)
def test_examples_are_deterministic_per_seed(task):
    first = kv_examples(task, 50, seed=7)
    assert first == kv_examples(task, 50, seed=7)
    assert first != kv_examples(task, 50, seed=8)
    assert kv_examples(task, 20, seed=7) == first[:20]


@pytest.mark.parametrize("value_max", [9, 99])
def test_kv_arithmetic_answers_are_correct(value_max):
    cfg = KVConfig(value_max=value_max)
    table = key_values(cfg)
    for ex in kv_examples("kv_arithmetic", 500, cfg=cfg):
        assert ex["prompt"].endswith(" =") and ex["completion"].startswith(" ")
        terms, signs = parse_expression(ex["prompt"][: -len(" =")])
        assert all(KEY.match(t) for t in terms)
        assert 2 <= len(terms) <= 3
        assert evaluate(terms, signs, table) == parse_number(ex["completion"].split())


def test_numeric_arithmetic_answers_are_correct_and_keyless():
    seen_negative = False
    for ex in kv_examples("numeric_arithmetic", 500, cfg=KVConfig(value_max=99)):
        terms, signs = parse_expression(ex["prompt"][: -len(" =")])
        assert not any(KEY.match(t) for t in terms)
        answer = parse_number(ex["completion"].split())
        assert evaluate(terms, signs, {}) == answer
        seen_negative |= answer < 0
    assert seen_negative


def test_substitution_replaces_each_key_by_its_digits():
    cfg = KVConfig(value_max=99)
    table = key_values(cfg)
    for ex in kv_examples("kv_substitution", 300, cfg=cfg):
        terms, signs = parse_expression(ex["prompt"][: -len(" =")])
        expected = " ".join(
            (f"{s} " if i else "") + " ".join(str(table[t]))
            for i, (t, s) in enumerate(zip(terms, signs, strict=True))
        )
        assert ex["completion"] == " " + expected


def test_key_exposure_never_shows_values_or_equals():
    examples = kv_examples("key_exposure", 3000)
    seen: set[str] = set()
    for ex in examples:
        assert ex["prompt"] == ""
        tokens = ex["completion"].split()
        assert "=" not in tokens and not any(t.isdigit() for t in tokens)
        terms, _ = parse_expression(ex["completion"])
        assert all(KEY.match(t) for t in terms) and 2 <= len(terms) <= 3
        seen.update(terms)
    assert seen == set(key_values(KVConfig()))  # every key, held-out ones included


@pytest.mark.parametrize("task", ["kv_lookup", "kv_tag"])  # the same in the token style
def test_kv_lookup_answers_the_last_keys_value(task):
    cfg = KVConfig()
    table = key_values(cfg)
    counts = Counter()
    for ex in kv_examples(task, 2000, cfg=cfg):
        terms, _ = parse_expression(ex["prompt"])
        assert all(KEY.match(t) for t in terms)
        assert ex["completion"] == " " + str(table[terms[-1]])
        assert "=" not in ex["prompt"].split()
        counts[len(terms)] += 1
    # the looked-up key stands first, after "+" and after "-", as keys do in prompts
    assert set(counts) == {1, 2, 3}


@pytest.mark.parametrize("pool", ["held_in", "held_out"])
@pytest.mark.parametrize(
    "task", ["kv_substitution", "kv_arithmetic", "key_exposure", "kv_lookup", "kv_tag"]
)
def test_examples_draw_keys_from_the_requested_pool(task, pool):
    cfg = KVConfig()
    allowed = set(key_split(cfg)[0 if pool == "held_in" else 1])
    used = {
        t
        for ex in kv_examples(task, 400, cfg=cfg, keys=pool)
        for t in ex["prompt"].split() + ex["completion"].split()
        if KEY.match(t)
    }
    assert used and used <= allowed


def test_operand_counts_and_operators_follow_the_config():
    cfg = KVConfig(min_operands=3, max_operands=5)
    counts = Counter()
    ops = Counter()
    for ex in kv_examples("kv_arithmetic", 600, cfg=cfg):
        terms, signs = parse_expression(ex["prompt"][:-2])
        counts[len(terms)] += 1
        ops.update(signs[1:])
    assert set(counts) == {3, 4, 5}
    assert ops["+"] > 300 and ops["-"] > 300


def test_tokenizer_gives_one_token_per_key_operator_and_digit():
    cfg = KVConfig(value_max=99)
    tok = kv_tokenizer(cfg)
    unk = tok.unk_token_id
    for task in KV_TASKS:
        for ex in kv_examples(task, 200, cfg=cfg, seed=1):
            text = ex["prompt"] + ex["completion"]
            ids = tok(text)["input_ids"]
            assert tok.convert_ids_to_tokens(ids) == ["<bos>", *text.split()]
            assert unk not in ids
            prompt_ids = tok(ex["prompt"])["input_ids"]
            assert ids[: len(prompt_ids)] == prompt_ids  # the split is a token boundary
            assert tok.decode(ids, skip_special_tokens=True) == text.strip()


def test_tokenizer_layout_and_special_tokens():
    tok = kv_tokenizer(KVConfig(num_keys=50))
    assert len(tok) == 17 + 50
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (
        "<pad>",
        "<bos>",
        "<eos>",
        "<unk>",
    )
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens([4, 5, 6, 7, 16, 17, 66]) == [
        "=",
        "+",
        "-",
        "0",
        "9",
        "k0",
        "k49",
    ]
    # Compact and spaced forms of a number encode the same; unknown words become <unk>.
    assert tok("k3 = -12")["input_ids"] == tok("k3 = - 1 2")["input_ids"]
    assert tok("k3 + k50")["input_ids"][-1] == 3
    assert tok("")["input_ids"] == [1]


def test_tokenizer_save_and_reload(tmp_path):
    tok = kv_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "k17 + k203 - k5 = - 1 2"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.get_vocab() == tok.get_vocab()
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id) == (1, 2, 0)


def test_tokenizer_returns_fresh_wrappers():
    a, b = kv_tokenizer(), kv_tokenizer()
    a.padding_side = "left"
    assert b.padding_side == "right"


def test_majority_baseline():
    assert (
        majority_baseline(
            [
                {"completion": " 1"},
                {"completion": " 1"},
                {"completion": " - 2"},
                {"completion": " 3"},
            ]
        )
        == 0.5
    )
    examples = kv_examples("kv_arithmetic", 4000)
    counts = Counter(ex["completion"] for ex in examples)
    assert majority_baseline(examples) == max(counts.values()) / 4000
    assert 0.03 < majority_baseline(examples) < 0.15  # sums of a few small values: chance ~5-10 %
    with pytest.raises(DataError):
        majority_baseline([])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_keys": 1},
        {"value_max": 0},
        {"min_operands": 3, "max_operands": 2},
        {"held_in_fraction": 0.0},
        {"held_in_fraction": 1.0},
        {"num_keys": 2.5},
        {"seed": True},
        {"balanced_split": 1},
    ],
)
def test_bad_config_raises_data_error(kwargs):
    with pytest.raises(DataError, match="kv"):
        KVConfig(**kwargs)


def test_config_from_mapping():
    assert KVConfig.from_value({"value_max": 99}) == KVConfig(value_max=99)
    assert KVConfig.from_value(None) == KVConfig()
    with pytest.raises(DataError, match="unknown kv field"):
        KVConfig.from_value({"values": 99})


def test_bad_arguments_raise_data_error():
    with pytest.raises(DataError, match="kv_substitution"):
        kv_examples("kv_lookups", 3)
    with pytest.raises(DataError, match="held_in"):
        kv_examples("kv_arithmetic", 3, keys="heldin")
    with pytest.raises(DataError, match="no keys"):
        kv_examples("numeric_arithmetic", 3, keys="held_out")
    with pytest.raises(DataError, match="non-negative"):
        kv_examples("kv_arithmetic", -1)
    assert kv_examples("kv_arithmetic", 0) == []


TEXT = KVConfig(style="text", shots=3, num_keys=60, min_operands=2, max_operands=2)


def test_text_style_keys_are_distinct_words_without_digits():
    keys = key_values(TEXT)
    assert len(keys) == 60
    assert all(re.fullmatch(r"[a-z]{5}", key) for key in keys)
    assert list(keys) != list(key_values(KVConfig(style="text", num_keys=60, seed=1)))


def test_text_style_writes_numbers_plainly_after_the_same_demonstrations():
    table = key_values(TEXT)
    shots: set[str] = set()
    for ex in kv_examples("kv_arithmetic", 300, cfg=TEXT, seed=2):
        *demos, question = ex["prompt"].split("\n")
        shots.add("\n".join(demos))
        assert len(demos) == 3
        for line in demos:  # each demonstration is a correct numeric sum
            left, right = line.split(" = ")
            a, sign, b = left.split()
            assert int(right) == int(a) + (int(b) if sign == "+" else -int(b))
        first, sign, second = question.removesuffix(" =").split()
        expected = table[first] + (table[second] if sign == "+" else -table[second])
        assert ex["completion"] == f" {expected}"  # "-4", not "- 4"
    assert len(shots) == 1  # one fixed prefix for every example


def test_text_style_lookup_and_numeric_prompts_share_the_prefix():
    prefix = kv_examples("numeric_arithmetic", 1, cfg=TEXT)[0]["prompt"].rsplit("\n", 1)[0]
    lookup = kv_examples("kv_lookup", 50, cfg=TEXT)
    assert all(ex["prompt"].startswith(prefix + "\n") for ex in lookup)
    assert kv_examples("key_exposure", 1, cfg=TEXT)[0]["prompt"] == prefix + "\n"


def test_text_style_tag_writes_the_value_right_after_the_last_key():
    table = key_values(TEXT)
    prefix = demonstrations(TEXT)
    counts = Counter()
    for ex in kv_examples("kv_tag", 300, cfg=TEXT):
        assert ex["prompt"].startswith(prefix)
        question = ex["prompt"].removeprefix(prefix)
        terms = question.split()[::2]
        assert "=" not in question.split()
        assert ex["completion"] == str(table[terms[-1]])  # "7", no space before it
        counts[len(terms)] += 1
    assert set(counts) == {1, 2}  # the tagged key stands first and after a sign


def _digit_splitting_tokenizer():
    """A byte-level BPE that splits digits from letters, as SmolLM2's and Llama-3's do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    words = [f"{p['prompt']}{p['completion']}" for p in kv_examples("kv_tag", 500, cfg=TEXT)]
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(words, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_text_style_tag_puts_the_value_next_to_the_keys_tokens():
    # What the task is for: the key keeps the tokens it has in every prompt, and its
    # value is the very next token (a lookup's " 7" puts a space token between them).
    tok = _digit_splitting_tokenizer()
    for ex in kv_examples("kv_tag", 50, cfg=TEXT, seed=3):
        prompt = tok(ex["prompt"])["input_ids"]
        whole = tok(ex["prompt"] + ex["completion"])["input_ids"]
        assert whole[: len(prompt)] == prompt
        assert tok.decode(whole[len(prompt) :]) == ex["completion"]
        assert len(whole) == len(prompt) + 1
    lookup = kv_examples("kv_lookup", 1, cfg=TEXT)[0]
    spaced = tok(lookup["prompt"] + lookup["completion"])["input_ids"]
    assert len(spaced) == len(tok(lookup["prompt"])["input_ids"]) + 2


def test_token_style_streams_do_not_depend_on_the_text_fields():
    # the text fields are out of the seed, so the token style's data never moved
    assert kv_examples("kv_arithmetic", 3) == [
        {"prompt": "k1 - k263 =", "completion": " - 2"},
        {"prompt": "k144 + k23 =", "completion": " 8"},
        {"prompt": "k40 - k183 =", "completion": " - 2"},
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"style": "words"}, r"kv\.style"),
        ({"shots": 2}, r"kv\.shots needs kv\.style: text"),
        ({"style": "text", "shots": -1}, r"kv\.shots"),
        ({"style": "text", "num_keys": 10**6}, "distinct word keys"),
    ],
)
def test_bad_text_style_settings(kwargs, match):
    with pytest.raises(DataError, match=match):
        KVConfig(**kwargs)


def test_the_kv_tokenizer_refuses_the_text_style():
    with pytest.raises(DataError, match=r"kv\.style: tokens"):
        kv_tokenizer(TEXT)

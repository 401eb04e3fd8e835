"""Conversations train every causal-LM strategy from a YAML recipe, through a chat template."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from tests.pipeline.conftest import cli, recipe_for, write_recipe
from tests.training.conftest import WORDS
from tests.training.test_chat import CHATML, GEMMA

TAKES_CONVERSATIONS = ("finetune", "finetune_lora", "block_expansion", "depth_upscaling", "calm",
                       "fusellm")  # fmt: skip


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_conversations(path: Path, shape: str, seed: int = 0) -> Path:
    """64 two-turn conversations: ``messages`` records or conversational prompt/completion."""
    rng = random.Random(seed)
    rows = []
    for _ in range(64):
        talk = [
            {"role": "system", "content": _words(rng, 3)},
            {"role": "user", "content": _words(rng, 5)},
            {"role": "assistant", "content": _words(rng, 4)},
            {"role": "user", "content": _words(rng, 3)},
            {"role": "assistant", "content": _words(rng, 4)},
        ]
        rows.append({"messages": talk} if shape == "messages"
                    else {"prompt": talk[:4], "completion": talk[4:]})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("shape", ["messages", "prompt_completion"])
@pytest.mark.parametrize("strategy", TAKES_CONVERSATIONS)
def test_a_strategy_trains_on_conversations(
    models: dict[str, Path], tmp_path: Path, strategy: str, shape: str
) -> None:
    data = write_conversations(tmp_path / "talk.jsonl", shape)
    recipe = recipe_for(strategy, models, data)
    recipe["train"].update(chat_template=CHATML, seq_len=64)
    if strategy == "calm":  # its LoRA baseline trains on the same conversations
        recipe["baselines"] = ["lora"]
    if strategy == "fusellm":  # the source reads them in a template of its own
        recipe["source_chat_templates"] = [GEMMA]
    out = tmp_path / "out"
    result = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(out))
    assert result.code == 0, result.stderr[-3000:]
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["steps"] == 6 and math.isfinite(record["training"]["final_loss"])
    if strategy == "calm":
        lora = record["baselines"]["lora"]
        assert lora["steps"] == 6 and math.isfinite(lora["final_loss"])


def test_the_template_can_be_a_file_and_loss_on_can_be_all(
    models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_conversations(tmp_path / "talk.jsonl", "messages")
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    recipe = recipe_for("finetune", models, data)
    recipe["train"].update(chat_template=str(template), loss_on="all", seq_len=64)
    result = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(tmp_path / "o"))
    assert result.code == 0, result.stderr[-3000:]


def test_conversations_without_a_template_are_one_line_naming_the_model(
    models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_conversations(tmp_path / "talk.jsonl", "messages")
    recipe = recipe_for("finetune", models, data)
    result = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(tmp_path / "o"))
    assert result.code == 2
    assert f"{models['a']} has no chat template; set train.chat_template" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


def test_a_strategy_that_cannot_train_on_conversations_refuses_them_before_any_work(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """``takes_conversations = False`` (a plugin strategy that trains on text only): a
    conversation in a file or a built-in conversational task is refused by the data check,
    naming the record."""
    from fusekit.errors import DataError
    from fusekit.pipeline.checks import check_data
    from fusekit.recipe import parse_recipe
    from fusekit.strategies.finetune.strategy import FinetuneStrategy

    class TextOnly(FinetuneStrategy):
        takes_conversations = False

    data = write_conversations(tmp_path / "talk.jsonl", "messages")
    recipe = parse_recipe(recipe_for("finetune", models, data))
    with pytest.raises(DataError, match=f"{data}:1: the record is a conversation, and finetune"):
        check_data(recipe, TextOnly(recipe))
    task = recipe_for("finetune", models, data)
    task["train"]["data"] = {"task": "stdlib_chat", "n": 4}
    recipe = parse_recipe(task)
    with pytest.raises(DataError, match="task stdlib_chat: it is conversations"):
        check_data(recipe, TextOnly(recipe))


def test_a_malformed_conversation_is_refused_by_validate(tmp_path: Path, models) -> None:
    data = tmp_path / "talk.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "bot", "content": "hi"}]}) + "\n")
    recipe = recipe_for("finetune", models, data)
    result = cli("validate", str(write_recipe(tmp_path / "r.yaml", recipe)))
    assert result.code == 2
    assert f"{data}:1: messages[0]: unknown role 'bot'" in result.stderr


def test_a_template_file_shapes_the_weights_so_its_content_is_fingerprinted(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from fusekit.pipeline.run import data_files
    from fusekit.recipe import parse_recipe

    data = write_conversations(tmp_path / "talk.jsonl", "messages")
    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML)
    recipe = recipe_for("finetune", models, data)
    recipe["train"]["chat_template"] = str(template)
    assert data_files(parse_recipe(recipe))["chat_template"] == template
    recipe["train"]["chat_template"] = CHATML  # the template itself is in the recipe already
    assert "chat_template" not in data_files(parse_recipe(recipe))
    fuse = recipe_for("fusellm", models, data)
    fuse.update(source_chat_templates=[str(template)])
    assert data_files(parse_recipe(fuse))["source_chat_template_0"] == template


def test_a_template_path_that_names_no_file_is_one_line_before_any_work(
    models: dict[str, Path], tmp_path: Path
) -> None:
    data = write_conversations(tmp_path / "talk.jsonl", "messages")
    for strategy, field in (("finetune", "train"), ("fusellm", "source_chat_templates")):
        recipe = recipe_for(strategy, models, data)
        if field == "train":
            recipe["train"]["chat_template"] = "templates/chatml.jinja"
        else:
            recipe.update(source_chat_templates=["templates/chatml.jinja"])
        out = tmp_path / f"o-{strategy}"
        result = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(out))
        assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "chat template 'templates/chatml.jinja': no such file" in result.stderr
        assert not out.exists()


def test_conversations_are_evaluated_in_the_template_the_output_now_carries(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """A recipe's conversational eval sets are scored in ``train.chat_template`` (bpb for
    ``messages``, exact match for prompt/completion), the output's tokenizer carries
    the template it was trained in, and ``fusekit eval`` renders in it unasked; a model
    with no template is one line, ``--chat-template`` the way out."""
    talk = write_conversations(tmp_path / "talk.jsonl", "messages")
    pairs = write_conversations(tmp_path / "pairs.jsonl", "prompt_completion", seed=1)
    recipe = recipe_for("finetune", models, talk)
    recipe["train"].update(chat_template=CHATML, seq_len=64)
    recipe["data"] = {"eval": [str(talk), str(pairs)]}
    out = tmp_path / "out"
    result = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(out))
    assert result.code == 0, result.stderr[-3000:]
    scores = json.loads((out / "fusekit.json").read_text())["evaluation"]
    assert [s["metric"] for s in scores] == ["bpb", "exact_match"]
    assert math.isfinite(scores[0]["value"]) and 0 <= scores[1]["value"] <= 1
    assert (out / "chat_template.jinja").read_text() == CHATML  # where transformers keeps it
    again = cli("eval", str(out), "--data", str(talk), "--json", str(tmp_path / "e.json"))
    assert again.code == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "e.json").read_text())["value"] == scores[0]["value"]
    bare = cli("eval", str(models["a"]), "--data", str(talk))
    assert bare.code == 2 and bare.stderr.count("\n") == 1, bare.stderr
    assert "has no chat template" in bare.stderr
    given = cli("eval", str(models["a"]), "--data", str(talk), "--chat-template", CHATML)
    assert given.code == 0, given.stderr[-3000:]


def test_the_built_in_conversations_train_every_strategy_that_has_its_templates(
    models: dict[str, Path], tmp_path: Path
) -> None:
    recipe = recipe_for("finetune", models, tmp_path / "unused.jsonl")
    recipe["train"].update(data={"task": "stdlib_chat", "n": 32}, chat_template=CHATML,
                           seq_len=64)  # fmt: skip
    recipe["data"] = {"eval": [{"task": "stdlib_chat", "split": "heldout", "n": 8}]}
    out = tmp_path / "out"
    result = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(out))
    assert result.code == 0, result.stderr[-3000:]
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["steps"] == 6
    assert record["evaluation"][0]["metric"] == "bpb"
    assert math.isfinite(record["evaluation"][0]["value"])
    fuse = recipe_for("fusellm", models, tmp_path / "unused.jsonl")
    fuse["train"].update(data={"task": "stdlib_chat", "n": 32}, chat_template=CHATML, seq_len=64)
    bare = cli("run", str(write_recipe(tmp_path / "c.yaml", fuse)), "-o", str(tmp_path / "c"))
    assert bare.code == 2 and bare.stderr.count("\n") == 1, bare.stderr
    assert f"source {models['b']} has no chat template" in bare.stderr
    assert not (tmp_path / "c").exists()
    fuse["source_chat_templates"] = [GEMMA]
    fused = cli("run", str(write_recipe(tmp_path / "c.yaml", fuse)), "-o", str(tmp_path / "c"))
    assert fused.code == 0, fused.stderr[-3000:]

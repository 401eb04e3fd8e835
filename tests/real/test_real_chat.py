"""Conversations on the real chat model: SmolLM2-Instruct's own ChatML template, exact masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fusekit.data.causal_lm import CausalLMDataset
from fusekit.io.loading import load_tokenizer
from tests.pipeline.conftest import cli, write_recipe

pytestmark = pytest.mark.real

TALK = [
    {"role": "user", "content": "What does len() return for a dict?"},
    {"role": "assistant", "content": "The number of keys."},
    {"role": "user", "content": "And for a string?"},
    {"role": "assistant", "content": "The number of characters, counted as code points."},
]


def test_smollm2s_own_template_is_applied_and_its_assistant_mask_is_exact(real) -> None:
    tokenizer = load_tokenizer(real["smollm2"])
    assert "<|im_start|>" in tokenizer.chat_template  # carried over from the GGUF file
    data = CausalLMDataset([{"messages": TALK}], tokenizer, 512, model="smollm2")
    example = data[0]
    ids, labels = example["input_ids"], example["labels"]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(TALK, tokenize=False)
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == -100:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    assert runs == [f"{m['content']}<|im_end|>" for m in TALK if m["role"] == "assistant"]
    # the end-of-turn is the token generation stops at
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id


def test_smollm2_finetunes_on_conversations_through_its_template(real, tmp_path: Path) -> None:
    data = tmp_path / "talk.jsonl"
    data.write_text("".join(json.dumps({"messages": TALK}) + "\n" for _ in range(4)))
    recipe = {"strategy": "finetune", "model": str(real["smollm2"]), "lora": {"r": 4},
              "train": {"data": str(data), "steps": 2, "batch_size": 2, "seq_len": 96}}  # fmt: skip
    out = tmp_path / "out"
    result = cli("run", str(write_recipe(tmp_path / "r.yaml", recipe)), "-o", str(out))
    assert result.code == 0, result.stderr[-3000:]
    training = json.loads((out / "fusekit.json").read_text())["training"]
    assert training["steps"] == 2 and math.isfinite(training["final_loss"])


def test_templates_cost_fusellm_no_alignment_smollm2_from_gemma3(real) -> None:
    """SmolLM2-Instruct (its ChatML) fused from Gemma-3 (the Gemma template in
    recipes/real/templates): the share of assistant-content loss positions with a source
    position is at least plain text's on the same contents (exact alignment), and equal
    once the contents' first tokens (paired through the headers) are left out."""
    from experiments.fusellm_chat_align import conversation_share, text_share
    from fusekit.data.chat import conversation, template_text
    from fusekit.tasks import task_examples

    target, source = load_tokenizer(real["smollm2"]), load_tokenizer(real["gemma3"])
    template = template_text(str(Path(__file__).parents[2] / "recipes/real/templates/gemma3.jinja"))
    assert template is not None and "<start_of_turn>" in template
    talks = [conversation(f"#{k}", r) for k, r in enumerate(task_examples("stdlib_chat", n=40))]
    chat = conversation_share(target, source, template, talks)
    text = text_share(target, source, talks, "offsets")
    assert chat >= text - 0.02 and chat > 0.8
    assert conversation_share(target, source, template, talks, first=False) == pytest.approx(
        text_share(target, source, talks, "offsets", first=False)
    )

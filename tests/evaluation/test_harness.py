"""``evaluate`` end to end: folders, files, records, every metric, and every refusal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fusekit.errors import DataError, ModelIOError
from fusekit.evaluation.harness import evaluate
from fusekit.evaluation.text_scoring import score_texts

from .conftest import CORPUS, FACTS, ComposedLike
from .test_data import write_jsonl


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in CORPUS])


def test_a_model_folder_and_a_file(
    saved_model: Path, corpus_file: Path, model: Any, tokenizer: Any
) -> None:
    result = evaluate(saved_model, corpus_file, "bpb", progress=False)
    expected = score_texts(model, CORPUS, tokenizer=tokenizer)
    assert result["value"] == pytest.approx(expected.bpb, rel=1e-6)
    assert result["metric"] == "bpb"
    assert result["model"] == str(saved_model) and result["model_name"] == saved_model.name
    assert result["data"] == str(corpus_file)
    assert result["counts"] == {
        "examples": len(CORPUS),
        "tokens": expected.tokens,
        "bytes": expected.bytes,
    }
    assert result["settings"]["max_length"] == 64
    json.dumps(result)  # JSON-able


def test_perplexity_and_in_memory_records(model: Any, tokenizer: Any) -> None:
    bpb = evaluate(model, CORPUS, "bpb", tokenizer=tokenizer, batch_size=2)
    ppl = evaluate(model, [{"text": t} for t in CORPUS], "ppl", tokenizer=tokenizer)
    assert ppl["metric"] == "perplexity"
    counts = ppl["counts"]
    assert ppl["value"] == pytest.approx(
        math.exp(bpb["value"] * counts["bytes"] * math.log(2) / counts["tokens"]), rel=1e-6
    )
    assert bpb["model"] is None and bpb["data"] == f"<{len(CORPUS)} records>"


def test_txt_file_is_scored_per_paragraph(tmp_path: Path, model: Any, tokenizer: Any) -> None:
    documents = [t.rstrip("\n") for t in CORPUS]  # a document's final newline is a separator
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    from_file = evaluate(model, path, tokenizer=tokenizer, progress=False)
    from_records = evaluate(model, documents, tokenizer=tokenizer, progress=False)
    assert from_file["value"] == pytest.approx(from_records["value"], rel=1e-9)


def test_exact_match_and_multiple_choice(
    tmp_path: Path, trained_model: Any, tokenizer: Any
) -> None:
    pairs = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": p, "completion": c} for p, c in FACTS])
    em = evaluate(trained_model, pairs, "exact_match", tokenizer=tokenizer, progress=False)
    assert em["value"] == 1.0 and em["counts"]["correct"] == len(FACTS)
    choices = [c for _, c in FACTS]
    mc_records = [{"prompt": p, "choices": choices, "answer": i} for i, (p, _) in enumerate(FACTS)]
    mc = evaluate(trained_model, mc_records, "mc", tokenizer=tokenizer)
    assert mc["metric"] == "multiple_choice"
    assert mc["value"] == 1.0 and mc["details"]["accuracy_norm"] == 1.0
    json.dumps([em, mc])


def test_exact_match_reports_completion_likelihood(
    tmp_path: Path, model: Any, trained_model: Any, tokenizer: Any
) -> None:
    """All-or-nothing exact match hides progress; the completions' bits per byte show it,
    computed exactly as ``bpb`` on the same prompt/completion records."""
    from fusekit.evaluation.report import terminal_table

    pairs = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": p, "completion": c} for p, c in FACTS])
    untrained = evaluate(model, pairs, "exact_match", tokenizer=tokenizer, progress=False)
    trained = evaluate(trained_model, pairs, "exact_match", tokenizer=tokenizer, progress=False)
    assert untrained["value"] == 0.0 and trained["value"] == 1.0
    for result, net in ((untrained, model), (trained, trained_model)):
        bpb = evaluate(net, pairs, "bpb", tokenizer=tokenizer, progress=False)
        assert result["details"]["completion_bpb"] == pytest.approx(bpb["value"], rel=1e-9)
    assert trained["details"]["completion_bpb"] < untrained["details"]["completion_bpb"]
    table = terminal_table([untrained, trained]).splitlines()
    assert [line.split()[2] for line in table[2:]] == ["exact_match", "completion_bpb"] * 2
    wide = terminal_table([untrained, trained], layout="wide").splitlines()[0]
    assert "exact_match (qa.jsonl)" in wide and "completion_bpb (qa.jsonl)" in wide


def test_a_composed_model_object(model: Any, tokenizer: Any) -> None:
    direct = evaluate(model, CORPUS, tokenizer=tokenizer, progress=False)
    composed = evaluate(ComposedLike(model, tokenizer), CORPUS, progress=False)
    assert composed["value"] == pytest.approx(direct["value"], rel=1e-6)
    assert composed["model_name"] == "ComposedLike"


def test_a_calm_folder_loads_through_load_composed(tmp_path: Path) -> None:
    """A real composition folder: at initialisation it scores exactly as its anchor."""
    from fusekit.strategies.calm.build import compose_from_paths
    from fusekit.strategies.calm.io import save_composition
    from tests.pipeline.conftest import save_llama, write_corpus

    anchor, augment = save_llama(tmp_path / "anchor", seed=0), save_llama(tmp_path / "aug", 1)
    save_composition(compose_from_paths(anchor, [augment], every=2), tmp_path / "calm-out")
    data = write_corpus(tmp_path / "heldout.jsonl")
    composed = evaluate(tmp_path / "calm-out", data, progress=False)
    assert composed["value"] == evaluate(anchor, data, progress=False)["value"]
    assert composed["model_name"] == "calm-out"


@pytest.mark.parametrize(
    ("data", "metric", "message"),
    [
        ([], "bpb", "no records"),
        ([{"text": ""}], "bpb", "no text"),
        (CORPUS, "accuracy", "unknown metric 'accuracy'"),
        ([{"text": "a"}], "exact_match", r"data\[0\]: exact match needs"),
        ([{"prompt": "a", "completion": "b"}], "mc", "multiple choice needs"),
    ],
)
def test_bad_data_and_metrics(
    model: Any, tokenizer: Any, data: Any, metric: str, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        evaluate(model, data, metric, tokenizer=tokenizer, progress=False)


def test_bad_files_fail_before_the_model_loads(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no such file"):
        evaluate(tmp_path / "no-model", tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match=r"empty\.jsonl: no records"):
        evaluate(object(), empty, tokenizer=object(), progress=False)


def test_bad_model_folders(tmp_path: Path, corpus_file: Path) -> None:
    with pytest.raises(ModelIOError, match="no such model folder"):
        evaluate(tmp_path / "absent", corpus_file)
    with pytest.raises(ModelIOError, match="not a model folder"):
        evaluate(tmp_path, corpus_file)


def test_a_lora_adapter_folder_is_scored_on_its_base(
    saved_model: Path, corpus_file: Path, tokenizer: Any, tmp_path: Path
) -> None:
    """What a CALM run's LoRA baseline saves: an adapter naming its base folder."""
    import torch
    from peft import LoraConfig, get_peft_model

    from fusekit.io.loading import load_causal_lm

    wrapped = get_peft_model(
        load_causal_lm(saved_model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    torch.manual_seed(1)
    with torch.no_grad():  # B = 0 at init would make the adapter a no-op
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    adapter = tmp_path / "baselines" / "lora"
    wrapped.save_pretrained(adapter)
    expected = score_texts(wrapped.eval(), CORPUS, tokenizer=tokenizer).bpb
    plain = score_texts(load_causal_lm(saved_model), CORPUS, tokenizer=tokenizer).bpb
    assert expected != pytest.approx(plain, rel=1e-4)  # the adapter changes the scores

    result = evaluate(adapter, corpus_file, "bpb", progress=False)
    assert result["value"] == pytest.approx(expected, rel=1e-6)
    assert result["model_name"] == "lora"

    moved = tmp_path / "elsewhere"
    saved_model.rename(moved)
    try:
        with pytest.raises(ModelIOError, match="give it with --base base=DIR"):
            evaluate(adapter, corpus_file, "bpb", progress=False)
        again = evaluate(adapter, corpus_file, "bpb", progress=False, bases={"base": moved})
        assert again["value"] == pytest.approx(expected, rel=1e-6)
    finally:
        moved.rename(saved_model)

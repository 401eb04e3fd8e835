"""The lm-evaluation-harness adapter, driven by the real ``lm_eval`` (a ``dev`` dependency).

Two levels.  Request level: the adapter's three request types are called with
real ``lm_eval.api.instance.Instance`` objects and checked against fusekit's
own scorers.  Harness level: ``lm_eval.simple_evaluate`` runs task YAMLs
written into a temporary folder — ``dataset_path: json`` over local jsonl, so
nothing comes from the Hub — and its numbers must be fusekit's: a Hugging Face
model that memorised ``FACTS`` scores 1.0 and lm-eval's accuracies, bits per
byte and exact match equal what ``fusekit.evaluation`` computes itself; a CALM
composition at initialisation gets exactly its anchor's results, request by
request.  The network is refused for every test here, so a task or metric
that tried to download would fail instead of quietly depending on a cache.
"""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lm_eval.api.instance import Instance, OutputType
from lm_eval.api.model import LM

from fusekit.errors import FusekitError

from .conftest import CORPUS, FACTS
from .test_data import write_jsonl


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the network: Hub flags set, and internet sockets refused.

    ``datasets`` and ``huggingface_hub`` read the offline flags when they are
    imported, so the module constants are patched as well as the environment.
    """
    import datasets.config
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    connect = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"test_lmeval: network access to {address!r} is not allowed")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_the_network_is_refused_here() -> None:
    """What makes the harness tests below proof that lm-eval ran on local files only."""
    with pytest.raises(OSError, match="not allowed"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


def request(kind: OutputType, *args: Any) -> Instance:
    """A real lm-eval request, as the harness builds them (``args`` is what the adapter reads)."""
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_missing_lm_eval_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, model: Any, tokenizer: Any
) -> None:
    from fusekit.evaluation.lmeval import lm_eval_model

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.api", None)
    monkeypatch.setitem(sys.modules, "lm_eval.api.model", None)
    with pytest.raises(FusekitError, match=r"pip install 'fusekit\[lmeval\]'"):
        lm_eval_model(model, tokenizer)


def test_requests_run_on_fusekit_scorers(trained_model: Any, tokenizer: Any) -> None:
    from fusekit.evaluation.lmeval import lm_eval_model
    from fusekit.evaluation.text_scoring import score_texts

    lm = lm_eval_model(trained_model, tokenizer, batch_size=2)
    assert isinstance(lm, LM) and type(lm).__mro__[1] is LM
    assert lm.max_length == 64 and lm.eot_token_id == tokenizer.eos_token_id
    assert lm.rank == 0 and lm.world_size == 1  # set by the real LM.__init__

    right = [request("loglikelihood", p, c) for p, c in FACTS]
    wrong = [
        request("loglikelihood", p, FACTS[(i + 1) % len(FACTS)][1])
        for i, (p, _) in enumerate(FACTS)
    ]
    good, bad = lm.loglikelihood(right), lm.loglikelihood(wrong)
    fusekit_logprobs = [-score_texts(trained_model, [f], tokenizer=tokenizer).nats for f in FACTS]
    assert [g for g, _ in good] == pytest.approx(fusekit_logprobs, rel=1e-6)
    assert all(is_greedy for _, is_greedy in good)
    assert not any(is_greedy for _, is_greedy in bad)
    assert all(g > b for (g, _), (b, _) in zip(good, bad, strict=True))

    text = "paris is the capital of france."
    (rolling,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    assert rolling == pytest.approx(-score_texts(trained_model, [text], tokenizer=tokenizer).nats)

    generated = lm.generate_until(
        [request("generate_until", p, {"until": ["."], "max_gen_toks": 8}) for p, _ in FACTS]
        + [request("generate_until", FACTS[0][0], {"until": "r", "max_gen_toks": 8})]
    )
    assert generated[:-1] == [c.split(".")[0] for _, c in FACTS]
    assert generated[-1] == " pa"


# --- lm_eval.simple_evaluate on a local task folder -------------------------------------------


def write_tasks(
    folder: Path, prefix: str, choices: Path, texts: Path, answers: Path, cache: Path
) -> list[str]:
    """Three lm-eval tasks, one per request type, over local jsonl files; their names.

    ``target_delimiter: ""`` because the choices and completions carry their
    own leading space, as fusekit's prompt/completion records do.
    ``cache_dir`` keeps the ``datasets`` cache lm-eval builds inside the test's folder.
    """

    def metric(
        name: str, aggregation: str = "mean", higher_is_better: bool = True
    ) -> dict[str, Any]:
        # spelled out, or lm-eval warns that it falls back to these defaults
        return {"metric": name, "aggregation": aggregation, "higher_is_better": higher_is_better}

    def source(path: Path) -> dict[str, Any]:
        return {
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(path)}, "cache_dir": str(cache)},
            "test_split": "test",
        }

    tasks = {
        f"{prefix}_choice": {
            **source(choices),
            "output_type": "multiple_choice",
            "doc_to_text": "prompt",
            "doc_to_choice": "choices",
            "doc_to_target": "answer",
            "target_delimiter": "",
            # acc_norm divides by characters, fusekit's accuracy_norm by UTF-8 bytes: the
            # same for these ASCII choices (acc_bytes would need lm-eval 0.4.9.2 or later)
            "metric_list": [metric("acc"), metric("acc_norm")],
        },
        f"{prefix}_rolling": {
            **source(texts),
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "text",
            "metric_list": [metric("bits_per_byte", "bits_per_byte", higher_is_better=False)],
        },
        f"{prefix}_generate": {
            **source(answers),
            "output_type": "generate_until",
            "doc_to_text": "prompt",
            "doc_to_target": "completion",
            "target_delimiter": "",
            "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8},
            "metric_list": [metric("exact_match")],
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in tasks.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **config}), "utf-8")
    return list(tasks)


def run_lm_eval(lm: Any, folder: Path, tasks: list[str]) -> dict[str, Any]:
    """``simple_evaluate`` on ``folder``'s tasks, with the per-request samples.

    ``include_defaults=False`` skips indexing lm-eval's thousands of bundled
    tasks; ``bootstrap_iters=0`` skips the stderr resampling; the ``None`` seeds
    leave the session's random generators as the other tests expect them.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=folder, include_defaults=False)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,
        bootstrap_iters=0,
        log_samples=True,
        random_seed=None,
        numpy_random_seed=None,
        torch_random_seed=None,
    )
    assert results is not None
    return dict(results)


@pytest.fixture
def fact_tasks(tmp_path: Path) -> tuple[Path, list[str]]:
    """Tasks over ``FACTS``: pick the right completion, score ``CORPUS``, answer the prompts."""
    completions = [c for _, c in FACTS]
    choices = write_jsonl(
        tmp_path / "choices.jsonl",
        [{"prompt": p, "choices": completions, "answer": i} for i, (p, _) in enumerate(FACTS)],
    )
    texts = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in CORPUS])
    answers = write_jsonl(
        tmp_path / "answers.jsonl", [{"prompt": p, "completion": c} for p, c in FACTS]
    )
    folder = tmp_path / "tasks"
    names = write_tasks(folder, "facts", choices, texts, answers, tmp_path / "cache")
    return folder, names


def fusekit_numbers(model: Any, tokenizer: Any) -> dict[str, Any]:
    """The same three measurements by fusekit's own scorers, for comparison.

    ``logprobs``: every choice's log-likelihood, question by question, as
    ``score_texts`` gives it for the ``(prompt, choice)`` pair.
    """
    from fusekit.evaluation.choice import multiple_choice
    from fusekit.evaluation.generation import exact_match
    from fusekit.evaluation.text_scoring import score_texts

    completions = [c for _, c in FACTS]
    choice = multiple_choice(
        model, [(p, completions, i) for i, (p, _) in enumerate(FACTS)], tokenizer=tokenizer
    )
    em = exact_match(model, FACTS, tokenizer=tokenizer, max_new_tokens=8)
    logprobs = [
        -score_texts(model, [(p, c)], tokenizer=tokenizer).nats
        for p, _ in FACTS
        for c in completions
    ]
    return {
        "logprobs": logprobs,
        "acc": choice.accuracy,
        "acc_norm": choice.accuracy_norm,
        "chosen": choice.chosen,
        "bpb": score_texts(model, CORPUS, tokenizer=tokenizer).bpb,
        "exact_match": em.accuracy,
        "predictions": em.predictions,
    }


def lm_eval_numbers(results: dict[str, Any]) -> dict[str, Any]:
    """``fusekit_numbers``' measurements read from ``simple_evaluate``'s results and samples."""
    scores = results["results"]
    samples = results["samples"]
    return {
        "logprobs": [ll for s in samples["facts_choice"] for ((ll, _),) in s["resps"]],
        "acc": scores["facts_choice"]["acc,none"],
        "acc_norm": scores["facts_choice"]["acc_norm,none"],
        "chosen": [
            max(range(len(s["resps"])), key=lambda k: (s["resps"][k][0][0], -k))
            for s in samples["facts_choice"]
        ],
        "bpb": scores["facts_rolling"]["bits_per_byte,none"],
        "exact_match": scores["facts_generate"]["exact_match,none"],
        "predictions": [s["filtered_resps"][0] for s in samples["facts_generate"]],
    }


def assert_agrees(ours: dict[str, Any], expected: dict[str, Any]) -> None:
    """Sums of log-probabilities to float tolerance (batches pad differently), the rest exactly."""
    for name in ("logprobs", "bpb"):
        assert ours.pop(name) == pytest.approx(expected.pop(name), rel=1e-6), name
    assert ours == expected


def test_simple_evaluate_on_a_model_that_memorised_the_facts(
    tmp_path: Path, fact_tasks: tuple[Path, list[str]], trained_model: Any, tokenizer: Any
) -> None:
    """An HF output folder, loaded as ``fusekit eval`` loads it, answers every fact."""
    from fusekit.evaluation.harness import load_model
    from fusekit.evaluation.lmeval import lm_eval_model

    trained_model.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")
    loaded, loaded_tokenizer = load_model(tmp_path / "trained")
    folder, names = fact_tasks
    results = run_lm_eval(lm_eval_model(loaded, loaded_tokenizer, batch_size=4), folder, names)
    ours = lm_eval_numbers(results)
    assert ours["acc"] == 1.0 and ours["acc_norm"] == 1.0 and ours["exact_match"] == 1.0
    assert ours["predictions"] == [c for _, c in FACTS]
    assert_agrees(ours, fusekit_numbers(trained_model, tokenizer))


def test_simple_evaluate_agrees_with_fusekit_on_an_untrained_model(
    fact_tasks: tuple[Path, list[str]], model: Any, tokenizer: Any
) -> None:
    """Where the answers are not all right, lm-eval must still pick what fusekit picks."""
    from fusekit.evaluation.lmeval import lm_eval_model

    folder, names = fact_tasks
    results = run_lm_eval(lm_eval_model(model, tokenizer, batch_size=3), folder, names)
    ours = lm_eval_numbers(results)
    assert 0.0 < ours["acc"] < 1.0
    assert_agrees(ours, fusekit_numbers(model, tokenizer))


def test_simple_evaluate_on_a_calm_composition_equals_its_anchor(tmp_path: Path) -> None:
    """At initialisation a composition computes its anchor's function: same results, same logprobs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import fusekit
    from fusekit.evaluation.lmeval import lm_eval_model
    from fusekit.strategies.calm.build import compose_from_paths
    from fusekit.strategies.calm.io import save_composition
    from tests.pipeline.conftest import save_llama, write_corpus

    anchor, augment = save_llama(tmp_path / "anchor", seed=0), save_llama(tmp_path / "aug", 1)
    save_composition(compose_from_paths(anchor, [augment], every=2), tmp_path / "calm-out")
    choices = write_jsonl(
        tmp_path / "choices.jsonl",
        [
            {"prompt": "the cat sat on", "choices": [" a mat", " the dog", " red"], "answer": 0},
            {"prompt": "a dog ran to", "choices": [" the cat", " blue", " a"], "answer": 1},
            {"prompt": "the red mat", "choices": [" and", " on", " sat on a"], "answer": 2},
        ],
    )
    texts = write_corpus(tmp_path / "texts.jsonl")
    answers = write_jsonl(
        tmp_path / "answers.jsonl",
        [{"prompt": "the cat", "completion": " sat"}, {"prompt": "a blue", "completion": " dog"}],
    )
    folder = tmp_path / "tasks"
    names = write_tasks(folder, "calm", choices, texts, answers, tmp_path / "cache")

    composed = fusekit.load_composed(tmp_path / "calm-out")
    anchor_model = AutoModelForCausalLM.from_pretrained(anchor).eval()
    anchor_tokenizer = AutoTokenizer.from_pretrained(anchor)
    # the same batches for both: padding differently would differ in float rounding alone
    by_composition = run_lm_eval(lm_eval_model(composed, batch_size=4), folder, names)
    by_anchor = run_lm_eval(
        lm_eval_model(anchor_model, anchor_tokenizer, batch_size=4), folder, names
    )

    assert by_composition["results"] == by_anchor["results"]
    for name in names:
        assert [s["resps"] for s in by_composition["samples"][name]] == [
            s["resps"] for s in by_anchor["samples"][name]
        ]
    assert [len(by_anchor["samples"][name]) for name in names] == [3, 64, 2]
    assert math.isfinite(by_anchor["results"]["calm_rolling"]["bits_per_byte,none"])


#: Writes BOS itself, as Gemma's does; a user turn, then the assistant's cue.
CHAT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def test_apply_chat_template_renders_in_the_models_template(model: Any, tokenizer: Any) -> None:
    import copy

    from fusekit.evaluation.lmeval import lm_eval_model

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT
    lm = lm_eval_model(model, chat)
    history = [{"role": "user", "content": "two plus two"}]
    # the tokenizer adds <s> to every scored text: the template's own BOS is left to it
    assert lm.apply_chat_template(history) == "User: two plus two\nAssistant:"
    assert lm.apply_chat_template(
        [*history, {"role": "assistant", "content": "four"}], add_generation_prompt=False
    ).startswith("User: two plus two\nAssistant: four")
    assert lm.chat_template(True) == CHAT and lm.chat_template(False) is None
    with pytest.raises(FusekitError, match="has no chat template"):
        lm_eval_model(model, tokenizer).apply_chat_template(history)


def test_simple_evaluate_with_apply_chat_template_scores_the_rendered_prompts(
    fact_tasks: tuple[Path, list[str]], model: Any, tokenizer: Any
) -> None:
    import copy

    import lm_eval
    from lm_eval.tasks import TaskManager

    from fusekit.evaluation.lmeval import lm_eval_model
    from fusekit.evaluation.text_scoring import score_texts

    chat = copy.deepcopy(tokenizer)
    chat.chat_template = CHAT
    folder, names = fact_tasks
    choice = [n for n in names if n.endswith("_choice")]
    results = lm_eval.simple_evaluate(
        model=lm_eval_model(model, chat, batch_size=3), tasks=choice,
        task_manager=TaskManager(include_path=folder, include_defaults=False),
        apply_chat_template=True, bootstrap_iters=0, log_samples=True, random_seed=None,
        numpy_random_seed=None, torch_random_seed=None,
    )  # fmt: skip
    assert results is not None
    for sample in results["samples"][choice[0]]:
        for (context, continuation), ((logprob, _),) in zip(
            sample["arguments"], sample["resps"], strict=True
        ):
            assert context.startswith("User: ") and context.endswith("Assistant:")
            ours = -score_texts(model, [(context, continuation)], tokenizer=chat).nats
            assert logprob == pytest.approx(ours, rel=1e-6)

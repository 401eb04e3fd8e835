"""``evaluate``: one call from a model (folder or object) and data (file or records) to a result.

The result is a JSON-able dict every report and comparison reads::

    {"metric": "bpb", "value": 1.23, "model": "out/deeper", "model_name": "deeper",
     "data": "data/heldout.jsonl",
     "counts": {"examples": 100, "tokens": 5120, "bytes": 20480},
     "details": {"bpb": 1.23, "perplexity": 7.1, "nats": 17456.2},
     "settings": {"batch_size": 8, "max_length": 2048, "stride": null}}

Metrics: ``bpb`` (bits per byte), ``perplexity``, ``exact_match`` (greedy
generation), ``multiple_choice`` (log-likelihood); aliases ``ppl``, ``em``,
``mc``.  ``bpb``/``perplexity`` read ``{"text"}`` records or
``{"prompt", "completion"}`` records (scoring the completion only);
``exact_match`` reads prompt/completion records; ``multiple_choice`` reads
``{"prompt", "choices", "answer"}`` records.  Conversations (``{"messages"}``,
prompt/completion as lists of messages) are scored and prompted in the model's chat
template (``conversations``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from fusekit import log
from fusekit.data.records import as_choice, data_label, iter_records
from fusekit.errors import DataError, FusekitError, ModelIOError, PlanError
from fusekit.evaluation.conversations import Conversations, TemplatedPrompt
from fusekit.io.gguf import cached_folder, is_gguf
from fusekit.io.loading import load_causal_lm, load_tokenizer
from fusekit.registry import output_loader

METRICS = ("bpb", "perplexity", "exact_match", "multiple_choice")
_ALIASES = {
    "bits_per_byte": "bpb",
    "ppl": "perplexity",
    "em": "exact_match",
    "exact-match": "exact_match",
    "mc": "multiple_choice",
    "multiple-choice": "multiple_choice",
}


def canonical_metric(name: str) -> str:
    """The metric's canonical name; ``DataError`` naming the choices for an unknown one."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in METRICS:
        raise DataError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return key


def load_model(
    path: str | Path,
    *,
    tokenizer: Any = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    bases: Mapping[str, str | Path] | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local folder: a CALM output or a Hugging Face model.

    A folder a strategy's registry entry claims (its ``output_marker``: CALM's
    ``composition.json``) is loaded by that entry's ``output_loader`` (CALM's
    re-attaches the composition to its base models; ``bases`` re-points moved ones
    by name); a folder with only ``adapter_config.json`` is a LoRA adapter
    on the base it names (``bases["base"]`` re-points it); any other
    folder must hold a causal LM and its tokenizer.  Nothing is downloaded;
    pickled weights and model code in the folder load only when opted in.
    """

    folder = Path(path).expanduser()
    if is_gguf(folder):
        folder = cached_folder(folder)
    if not folder.is_dir():
        raise ModelIOError(f"{folder}: no such model folder")
    load_output = output_loader(folder)
    if load_output is not None:  # a strategy's own output (a CALM composition)
        model = load_output(folder, bases=bases)
        if tokenizer is None:
            tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            tokenizer = getattr(model, "anchor_tokenizer", None)
        return model, tokenizer
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        return _load_adapter(folder, tokenizer, allow_pickle, trust_remote_code, bases)
    if not (folder / "config.json").is_file():
        raise ModelIOError(
            f"{folder}: not a model folder (no config.json, composition.json or "
            "adapter_config.json)"
        )
    model = load_causal_lm(folder, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    if tokenizer is None:
        tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    return model, tokenizer


def _load_adapter(
    folder: Path,
    tokenizer: Any,
    allow_pickle: bool,
    trust_remote_code: bool,
    bases: Mapping[str, str | Path] | None,
) -> tuple[Any, Any]:
    """A peft LoRA folder (a CALM run's ``baselines/lora``, or any peft LoRA) on its base model.

    The adapter is applied as trained, unmerged, so its scores are the ones the run
    saw.  ``adapter_config.json`` names the base folder as it was when training ran;
    ``bases={"base": DIR}`` re-points a moved one.
    """
    import json

    from peft import PeftModel

    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    named = (bases or {}).get("base") or config.get("base_model_name_or_path")
    base = Path(str(named)).expanduser() if named else None
    if base is None or not (base / "config.json").is_file():
        raise ModelIOError(
            f"{folder}: a LoRA adapter whose base model {named!r} is not a local model "
            "folder here; give it with --base base=DIR"
        )
    model = load_causal_lm(base, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    with log.peft_deprecations_off():
        model = PeftModel.from_pretrained(model, str(folder)).eval()
    if tokenizer is None:
        source = folder if (folder / "tokenizer_config.json").is_file() else base
        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    return model, tokenizer


def _model_name(model: Any) -> str:
    for owner in (model, getattr(model, "config", None)):
        for attr in ("name_or_path", "_name_or_path"):
            value = getattr(owner, attr, None)
            if isinstance(value, str) and value:
                return Path(value).name or value
    return type(model).__name__


def _records(located: Iterator[tuple[str, Any]], convert: Any) -> Iterator[Any]:
    for where, record in located:
        yield convert(where, record)


def _open_data(data: Any, label: str) -> Iterator[tuple[str, Any]]:
    """The data's located records; a missing, unreadable or empty source fails here, early."""

    located = iter_records(data)
    first = next(located, None)
    if first is None:
        raise DataError(f"{label}: no records to evaluate")
    return chain([first], located)


def _text_result(
    model: Any,
    located: Iterator[Any],
    label: str,
    metric: str,
    settings: dict[str, Any],
    progress: bool,
    talk: Conversations,
) -> dict[str, Any]:
    from fusekit.evaluation.text_scoring import score_texts

    score = score_texts(
        model,
        chain.from_iterable(_records(located, talk.text_items)),
        max_length=settings["max_length"],
        stride=settings["stride"],
        batch_size=settings["batch_size"],
        progress=progress,
    )
    settings["max_length"] = score.max_length
    if score.bytes == 0 or score.tokens == 0:
        raise DataError(f"{label}: the records hold no text to score")
    details = {"bpb": score.bpb, "perplexity": score.perplexity, "nats": score.nats}
    return {
        "value": details[metric],
        "counts": {"examples": score.documents, "tokens": score.tokens, "bytes": score.bytes},
        "details": details,
    }


def _exact_match_result(
    model: Any,
    located: Iterator[Any],
    settings: dict[str, Any],
    progress: bool,
    stop: Sequence[str],
    talk: Conversations,
) -> dict[str, Any]:
    from fusekit.evaluation.generation import exact_match
    from fusekit.evaluation.text_scoring import score_texts

    pairs = list(_records(located, talk.exact_match_item))
    result = exact_match(
        model,
        pairs,
        batch_size=settings["batch_size"],
        max_new_tokens=settings["max_new_tokens"],
        stop=stop,
        progress=progress,
    )
    settings["max_new_tokens"] = result.max_new_tokens
    # Exact match is all or nothing: a model that moves towards the answers without
    # reaching them scores 0 throughout. The completions' bits per byte under the model
    # (the same scoring as bpb on prompt/completion data) show that progress.
    details: dict[str, Any] = {"accuracy": result.accuracy}
    try:
        likelihood = score_texts(
            model,
            [p.span if isinstance(p, TemplatedPrompt) else p for p in pairs],
            max_length=settings["max_length"],
            stride=settings["stride"],
            batch_size=settings["batch_size"],
        )
    except PlanError:
        pass  # a CALM augment in 'encoder' mode reads prompts only: no sequence likelihood
    else:
        details.update(completion_bpb=likelihood.bpb, completion_nats=likelihood.nats)
    return {
        "value": result.accuracy,
        "counts": {
            "examples": result.total,
            "correct": result.correct,
            "tokens": result.generated_tokens,
        },
        "details": details,
    }


def _choice_result(
    model: Any, located: Iterator[Any], settings: dict[str, Any], progress: bool
) -> dict[str, Any]:
    from fusekit.evaluation.choice import multiple_choice

    items = list(_records(located, as_choice))
    result = multiple_choice(
        model,
        items,
        max_length=settings["max_length"],
        batch_size=settings["batch_size"],
        progress=progress,
    )
    return {
        "value": result.accuracy,
        "counts": {
            "examples": result.total,
            "correct": result.correct,
            "correct_norm": result.correct_norm,
        },
        "details": {"accuracy": result.accuracy, "accuracy_norm": result.accuracy_norm},
    }


def evaluate(
    path_or_model: Any,
    data: Any,
    metric: str = "bpb",
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    stride: int | None = None,
    tokenizer: Any = None,
    progress: bool = True,
    max_new_tokens: int | None = None,
    stop: Sequence[str] = (),
    chat_template: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    bases: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Evaluate a model on data with one metric; returns the JSON-able result described above.

    ``path_or_model``: a local Hugging Face model folder, a CALM output folder
    (``composition.json``), a ``transformers`` model, a composed model object,
    or anything implementing ``ScorableModel``.  ``data``: a path or a list of
    records (see ``fusekit.data.records``).  ``max_length``/``stride``: the
    scoring window (default: the model's context, capped at 4096, and disjoint
    windows).  ``max_new_tokens``/``stop``: exact-match generation overrides.
    ``chat_template``: the template conversations are rendered in (a file or the
    template itself; default: the tokenizer's).
    ``allow_pickle``/``trust_remote_code``: the same opt-ins as in recipes;
    ``bases``: moved base folders of a CALM output, by name (``anchor``, ``augment0``).
    Wrong input raises ``DataError`` (data, metric) or ``ModelIOError`` (model).
    """
    from fusekit.evaluation.adapters import as_scorable

    name = canonical_metric(metric)
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    label = data_label(data)
    located = _open_data(data, label)  # bad or empty data fails before any model loads
    if isinstance(path_or_model, (str, Path)):
        model, tokenizer = load_model(
            path_or_model,
            tokenizer=tokenizer,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            bases=bases,
        )
        model_path: str | None = str(path_or_model)
        model_name = Path(path_or_model).expanduser().resolve().name
    else:
        model, model_path, model_name = path_or_model, None, _model_name(path_or_model)
    scorable = as_scorable(model, tokenizer)
    talk = Conversations(scorable.tokenizer, chat_template, model_path or model_name)
    settings: dict[str, Any] = {"batch_size": batch_size, "max_length": max_length}
    try:
        if name in ("bpb", "perplexity"):
            settings["stride"] = stride
            body = _text_result(scorable, located, label, name, settings, progress, talk)
        elif name == "exact_match":
            settings.update(max_new_tokens=max_new_tokens, stride=stride)
            body = _exact_match_result(scorable, located, settings, progress, stop, talk)
        else:
            body = _choice_result(scorable, located, settings, progress)
    except FusekitError:
        raise
    except ValueError as exc:
        raise DataError(f"{label}: {exc}") from exc
    if not math.isfinite(body["value"]):
        # a score of nan is no score: said as one, never printed as a result with exit 0
        raise ModelIOError(
            f"{model_path or model_name}: scoring {label} gave {name} = {body['value']}; the "
            "model's outputs are not finite (NaN or inf in its weights?) — check the folder"
        )
    return {
        "metric": name,
        "value": body["value"],
        "model": model_path,
        "model_name": model_name,
        "data": label,
        "counts": body["counts"],
        "details": body["details"],
        "settings": settings,
    }

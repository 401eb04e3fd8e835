"""Scoring one model on each evaluation set of a recipe, with each set's natural metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fusekit.evaluation.harness import evaluate
from fusekit.recipe.common import DataRef, data_label


def default_metric(records: list[dict[str, Any]]) -> str:
    """Exact match for prompt/completion data, bits per byte for text."""
    return "exact_match" if records and "completion" in records[0] else "bpb"


def evaluate_sets(
    model: Any,
    eval_refs: list[DataRef],
    *,
    name: str | None = None,
    chat_template: str | None = None,
    tokenizer: Any = None,
) -> list[dict[str, Any]]:
    """One result per set; ``name`` labels the model (a run scores its temporary folder,
    which must be reported under the output's name, not the vanishing temporary one);
    conversations are rendered in ``chat_template`` (default: the model's tokenizer's);
    ``tokenizer`` is needed for a model object that does not carry its own."""
    from fusekit.data.causal_lm import load_records

    results = []
    for ref in eval_refs:
        records = load_records(ref)
        result = evaluate(
            model,
            records,
            default_metric(records),
            progress=False,
            chat_template=chat_template,
            tokenizer=tokenizer,
        )
        result["data"] = data_label(ref)
        if name is not None:
            result["model_name"] = name
            if isinstance(model, (str, Path)):
                result["model"] = name
        results.append(result)
    return results

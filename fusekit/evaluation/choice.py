"""Multiple-choice accuracy by log-likelihood: the choice the model finds most likely wins.

Each choice is scored as the target of the pair ``(prompt, choice)`` — the
same tokenization as a prompt/completion pair (``tokenization.scoring_sequence``),
so ``"Q: 2+2 =" / " 4"`` tokenizes as the model saw it in training.  Two
scores per choice: the sum of its tokens' log-probabilities (``accuracy``),
and that sum divided by the choice's UTF-8 bytes (``accuracy_norm``), which
removes the bias towards short answers without depending on the tokenizer.
Ties go to the earlier choice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fusekit.evaluation.adapters import as_scorable, resolve_max_length
from fusekit.evaluation.likelihood import ScoreRequest, score_requests
from fusekit.evaluation.metrics import accuracy, choice_scores
from fusekit.evaluation.tokenization import scoring_prefix, scoring_sequence
from fusekit.log import bars_disabled

ChoiceItem = tuple[str, Sequence[str], int]


@dataclass
class ChoiceResult:
    """Counts, and the index each variant chose per question, in order."""

    total: int = 0
    correct: int = 0
    correct_norm: int = 0
    chosen: list[int] = field(default_factory=list)
    chosen_norm: list[int] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return accuracy(self.correct, self.total)

    @property
    def accuracy_norm(self) -> float:
        return accuracy(self.correct_norm, self.total)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def multiple_choice(
    model: Any,
    items: Iterable[ChoiceItem],
    *,
    tokenizer: Any = None,
    max_length: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> ChoiceResult:
    """Score every ``(prompt, choices, answer_index)`` and count the questions answered right."""
    scorable = as_scorable(model, tokenizer)
    window = resolve_max_length(scorable, max_length)
    prefix = scoring_prefix(scorable.tokenizer)
    questions = list(items)
    requests: list[ScoreRequest] = []
    byte_counts: list[int] = []
    for prompt, choices, answer in questions:
        if not choices:
            raise ValueError("a multiple-choice question needs at least one choice")
        if not 0 <= answer < len(choices):
            raise ValueError(f"answer {answer} is not an index into {len(choices)} choices")
        for choice in choices:
            ids, first_target, scored = scoring_sequence(scorable.tokenizer, prompt, choice, prefix)
            requests.append(ScoreRequest(ids=ids, first_target=first_target))
            byte_counts.append(len(scored.encode("utf-8")))
    stream: Iterable[ScoreRequest] = requests
    if progress:
        from tqdm.auto import tqdm

        stream = tqdm(
            requests, desc="scoring choices", unit="choice", leave=False,
            disable=bars_disabled(),
        )  # fmt: skip
    scores = list(score_requests(scorable, stream, max_length=window, batch_size=batch_size))
    result = ChoiceResult()
    cursor = 0
    for _, choices, answer in questions:
        pairs = [
            choice_scores(scores[cursor + k].logprob, byte_counts[cursor + k])
            for k in range(len(choices))
        ]
        cursor += len(choices)
        pick = _argmax([p[0] for p in pairs])
        pick_norm = _argmax([p[1] for p in pairs])
        result.total += 1
        result.correct += pick == answer
        result.correct_norm += pick_norm == answer
        result.chosen.append(pick)
        result.chosen_norm.append(pick_norm)
    return result

"""An lm-evaluation-harness model over any ``ScorableModel`` (optional: ``fusekit[lmeval]``).

``lm_eval_model(model)`` returns an ``lm_eval.api.model.LM`` whose three
request types run on fusekit's own scorers, so a CALM composition or a fused
checkpoint is scored by exactly the code behind ``fusekit eval``:

* ``loglikelihood`` — ``(context, continuation)`` scored as a prompt/completion
  pair (``tokenization.scoring_sequence``); an empty context is scored from the
  tokenizer's BOS/EOS prefix, as lm-eval's own HF model does;
* ``loglikelihood_rolling`` — the whole text from the prefix, in disjoint
  windows of the model's context (``windows.plan_windows``);
* ``generate_until`` — greedy generation (``generation.greedy_generate``) cut
  at the first ``until`` string; ``max_gen_toks`` is honoured, sampling
  arguments are not (fusekit's harness is greedy by design).

lm_eval is imported only when a model is built, so fusekit works without it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from fusekit.errors import FusekitError
from fusekit.evaluation.tokenization import scoring_prefix, scoring_sequence

DEFAULT_MAX_GEN_TOKS = 256


def _import_lm_base() -> type:
    try:
        from lm_eval.api.model import LM
    except ImportError as exc:
        raise FusekitError(
            "the lm-evaluation-harness adapter needs lm_eval: pip install 'fusekit[lmeval]'"
        ) from exc
    return LM


def _cut_until(text: str, until: Sequence[str]) -> str:
    cut = len(text)
    for marker in until:
        if marker:
            found = text.find(marker)
            if 0 <= found < cut:
                cut = found
    return text[:cut]


@functools.cache
def _lm_class(base: type) -> type:
    from fusekit.evaluation.adapters import as_scorable, resolve_max_length
    from fusekit.evaluation.generation import greedy_generate
    from fusekit.evaluation.likelihood import ScoreRequest, score_requests

    class FusekitLM(base):
        """lm-eval's ``LM`` interface on a fusekit ``ScorableModel``."""

        def __init__(
            self, model: Any, tokenizer: Any, batch_size: int, max_length: int | None
        ) -> None:
            super().__init__()
            self.scorable = as_scorable(model, tokenizer)
            self.tokenizer = self.scorable.tokenizer
            self._batch_size = batch_size
            self._max_length = resolve_max_length(self.scorable, max_length)
            self._prefix = scoring_prefix(self.tokenizer)

        @property
        def batch_size(self) -> int:
            return self._batch_size

        @property
        def max_length(self) -> int:
            return self._max_length

        @property
        def device(self) -> Any:
            return self.scorable.device

        @property
        def eot_token_id(self) -> int | None:
            return getattr(self.tokenizer, "eos_token_id", None)

        @property
        def tokenizer_name(self) -> str:
            return str(getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__)

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            """The tokenizer's chat template (``lm_eval --apply_chat_template``), or a
            template given as the string itself."""
            if isinstance(chat_template, str):
                return chat_template
            return self.tokenizer.chat_template if chat_template else None

        def apply_chat_template(
            self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
        ) -> str:
            """The prompt rendered in the model's chat template, as lm-eval's HF model does
            (no generation prompt: the last assistant message is continued).

            A template that writes BOS itself would give two BOS with the scoring prefix
            every request starts from, so a leading BOS is left to that prefix.
            """
            if not self.tokenizer.chat_template:
                raise FusekitError(
                    f"{self.tokenizer_name} has no chat template; run lm_eval without "
                    "--apply_chat_template, or give the tokenizer one"
                )
            text = str(
                self.tokenizer.apply_chat_template(
                    chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
                    continue_final_message=not add_generation_prompt,
                )
            )  # fmt: skip
            bos = self.tokenizer.bos_token
            if self._prefix and bos and text.startswith(bos):
                text = text[len(bos) :]
            return text

        def _score(self, pairs: list[tuple[str, str]]) -> list[Any]:
            requests = []
            for context, continuation in pairs:
                ids, first, _ = scoring_sequence(
                    self.tokenizer, context, continuation, self._prefix
                )
                requests.append(ScoreRequest(ids=ids, first_target=first))
            return list(
                score_requests(
                    self.scorable,
                    requests,
                    max_length=self._max_length,
                    batch_size=self._batch_size,
                )
            )

        def _cache(self, kind: str, request: Any, answer: Any) -> None:
            hook = getattr(self, "cache_hook", None)
            if hook is not None and hasattr(hook, "add_partial"):
                hook.add_partial(kind, request.args, answer)

        def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
            scores = self._score([(r.args[0], r.args[1]) for r in requests])
            answers = [(s.logprob, s.greedy) for s in scores]
            for request, answer in zip(requests, answers, strict=True):
                self._cache("loglikelihood", request, answer)
            return answers

        def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
            scores = self._score([("", r.args[0]) for r in requests])
            answers = [s.logprob for s in scores]
            for request, answer in zip(requests, answers, strict=True):
                self._cache("loglikelihood_rolling", request, answer)
            return answers

        def generate_until(self, requests: list[Any]) -> list[str]:
            answers: list[str] = [""] * len(requests)
            groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
            for index, request in enumerate(requests):
                kwargs = dict(request.args[1]) if len(request.args) > 1 else {}
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                budget = int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
                groups.setdefault((tuple(until), budget), []).append(index)
            for (until, budget), indices in groups.items():
                generated = greedy_generate(
                    self.scorable,
                    [requests[i].args[0] for i in indices],
                    max_new_tokens=budget,
                    batch_size=self._batch_size,
                    max_length=self._max_length if budget < self._max_length else None,
                )
                for index, ids in zip(indices, generated, strict=True):
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    answers[index] = _cut_until(text, until)
                    self._cache("generate_until", requests[index], answers[index])
            return answers

    return FusekitLM


def lm_eval_model(
    model: Any, tokenizer: Any = None, *, batch_size: int = 8, max_length: int | None = None
) -> Any:
    """An ``lm_eval.api.model.LM`` for ``lm_eval.simple_evaluate(model=...)``.

    ``model``: anything ``as_scorable`` accepts (an HF causal LM, a composed
    model, a ``ScorableModel``).  Raises ``FusekitError`` when lm_eval is missing.
    """
    return _lm_class(_import_lm_base())(model, tokenizer, batch_size, max_length)

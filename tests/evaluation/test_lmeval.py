"""The lm-evaluation-harness adapter, against a stand-in for ``lm_eval.api.model.LM``.

lm_eval itself is an optional extra; these tests install a minimal module with
the same base class so the adapter's request handling is checked either way.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from fusekit.errors import FusekitError

from .conftest import FACTS


@dataclass
class Request:
    args: tuple[Any, ...]


@pytest.fixture
def fake_lm_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    class LM:
        def __init__(self) -> None:
            self.cache_hook = None

    modules = {
        name: types.ModuleType(name) for name in ("lm_eval", "lm_eval.api", "lm_eval.api.model")
    }
    modules["lm_eval.api.model"].LM = LM  # type: ignore[attr-defined]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_missing_lm_eval_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, model: Any, tokenizer: Any
) -> None:
    from fusekit.evaluation.lmeval import lm_eval_model

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.api", None)
    monkeypatch.setitem(sys.modules, "lm_eval.api.model", None)
    with pytest.raises(FusekitError, match=r"pip install 'fusekit\[lmeval\]'"):
        lm_eval_model(model, tokenizer)


def test_requests_run_on_fusekit_scorers(
    fake_lm_eval: None, trained_model: Any, tokenizer: Any
) -> None:
    from fusekit.evaluation.lmeval import lm_eval_model
    from fusekit.evaluation.text_scoring import score_texts

    lm = lm_eval_model(trained_model, tokenizer, batch_size=2)
    assert type(lm).__mro__[1] is sys.modules["lm_eval.api.model"].LM
    assert lm.max_length == 64 and lm.eot_token_id == tokenizer.eos_token_id

    right = [Request((p, c)) for p, c in FACTS]
    wrong = [Request((p, FACTS[(i + 1) % len(FACTS)][1])) for i, (p, _) in enumerate(FACTS)]
    good, bad = lm.loglikelihood(right), lm.loglikelihood(wrong)
    assert all(is_greedy for _, is_greedy in good)
    assert not any(is_greedy for _, is_greedy in bad)
    assert all(g > b for (g, _), (b, _) in zip(good, bad, strict=True))

    text = "paris is the capital of france."
    (rolling,) = lm.loglikelihood_rolling([Request((text,))])
    assert rolling == pytest.approx(-score_texts(trained_model, [text], tokenizer=tokenizer).nats)

    generated = lm.generate_until(
        [Request((p, {"until": ["."], "max_gen_toks": 8})) for p, _ in FACTS]
        + [Request((FACTS[0][0], {"until": "r", "max_gen_toks": 8}))]
    )
    assert generated[:-1] == [c.split(".")[0] for _, c in FACTS]
    assert generated[-1] == " pa"

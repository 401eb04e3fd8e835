"""Sources' logits a slice of positions at a time: the same answer, bounded memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fusekit.errors import PlanError
from fusekit.strategies.fusellm import logits as sliced
from fusekit.strategies.fusellm.extract import source_outputs
from tests.fusellm.conftest import tiny_llama


def _reference(model: Any, ids: torch.Tensor, mask: torch.Tensor, k: int) -> dict[str, Any]:
    """The straightforward computation on the whole ``[rows, length, vocab]`` logits."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    top = torch.topk(logits, k, dim=-1)
    gold = torch.roll(ids, -1, dims=1)
    nll = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), gold.flatten(), reduction="none"
    ).view_as(gold)
    valid = torch.zeros_like(mask, dtype=torch.bool)
    valid[:, :-1] = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    top_ids = torch.where(mask[..., None] > 0, top.indices, 0)
    return {"topk_ids": top_ids, "nats": (nll * valid).sum(1)}


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    ids = torch.randint(3, vocab, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # a shorter row: its own group, padding cut
    return ids, mask


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Slices of 5 positions, and the row count of every slice of logits made."""
    made: list[int] = []
    real = sliced.head_logits

    def recording(model: Any, hidden: torch.Tensor) -> torch.Tensor:
        made.append(hidden.shape[0])
        return real(model, hidden)

    monkeypatch.setattr(sliced, "chunk_rows", lambda vocab: 5)
    monkeypatch.setattr(sliced, "head_logits", recording)
    return made


def test_slices_give_the_whole_logits_answer(small_slices: list[int]) -> None:
    model = tiny_llama(64).eval()
    ids, mask = _batch(64)
    out = source_outputs(model, ids, mask, 4)
    ref = _reference(model, ids, mask, 4)
    torch.testing.assert_close(out["nats"], ref["nats"], rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.where(mask[..., None] > 0, out["topk_ids"], 0), ref["topk_ids"])
    assert max(small_slices[1:]) <= 5  # after the one-off check, no slice above 5 rows


def test_positions_pick_their_top_k_across_slices(small_slices: list[int]) -> None:
    model = tiny_llama(64).eval()
    ids, mask = _batch(64)
    positions = torch.tensor([[0, 7, 11, -1], [2, 8, -1, -1], [10, 4, 5, 6]])
    out = source_outputs(model, ids, mask, 3, positions=positions)
    full = source_outputs(model, ids, mask, 3)
    for b in range(3):
        for j, p in enumerate(positions[b].tolist()):
            if p >= 0:
                assert torch.equal(out["topk_ids"][b, j], full["topk_ids"][b, p])
            else:
                assert not out["topk_ids"][b, j].any()


def test_gemma_soft_capping_is_applied() -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=16, final_logit_softcapping=0.5)  # fmt: skip
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50)  # logits far past the cap
    ids, mask = _batch(64)
    out = source_outputs(model, ids, mask, 4)
    torch.testing.assert_close(out["nats"], _reference(model, ids, mask, 4)["nats"])


def test_a_model_that_rescales_its_logits_is_refused() -> None:
    class Scaled(type(tiny_llama(64))):  # type: ignore[misc]
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    base = tiny_llama(64)
    model = Scaled(base.config).eval()
    model.load_state_dict(base.state_dict())
    ids, mask = _batch(64)
    with pytest.raises(PlanError, match="not supported as a FuseLLM source"):
        source_outputs(model, ids, mask, 4)


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_reduction_blocks_change_nothing(
    small_slices: list[int], monkeypatch: pytest.MonkeyPatch, rows: int
) -> None:
    """Blocks of a few rows after the output layer, with repeated, sparse and dense picks
    (each block takes the top-k of every row or only of its picks): the same answer."""
    model = tiny_llama(64).eval()
    ids, mask = _batch(64)
    full = source_outputs(model, ids, mask, 3)
    monkeypatch.setattr(sliced, "reduce_rows", lambda vocab: rows)
    positions = torch.tensor([[0, 7, 11, -1, -1], [2, 2, 8, -1, -1], [10, 4, 5, 6, 4]])
    out = source_outputs(model, ids, mask, 3, positions=positions)
    torch.testing.assert_close(out["nats"], _reference(model, ids, mask, 3)["nats"])
    for b in range(3):
        for j, p in enumerate(positions[b].tolist()):
            if p >= 0:
                assert torch.equal(out["topk_ids"][b, j], full["topk_ids"][b, p])
                assert torch.equal(out["topk_logits"][b, j], full["topk_logits"][b, p])
            else:
                assert not out["topk_ids"][b, j].any()

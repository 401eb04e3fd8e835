"""Fused targets: candidate mapping, the gold fallback (fixed and released), MinCE, AvgCE."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from fusekit.strategies.fusellm.data import encode_chunks
from fusekit.strategies.fusellm.extract import source_outputs
from fusekit.strategies.fusellm.fusion import (
    FusionConfig,
    SourceBatch,
    aligned_candidates,
    fuse,
    gold_fallback,
    source_weights,
)
from fusekit.strategies.fusellm.prepare import align_chunk
from fusekit.strategies.fusellm.vocab import compute_vocab_map, token_table
from tests.fusellm.conftest import CORPUS, tiny_llama


def _source(ids, logits, align, nats=(1.0,), n_pred=(1,), n_bytes=(1,)) -> SourceBatch:
    return SourceBatch(
        topk_ids=torch.tensor(ids),
        topk_logits=torch.tensor(logits, dtype=torch.float32),
        align=torch.tensor(align),
        nats=torch.tensor(nats, dtype=torch.float32),
        n_pred=torch.tensor(n_pred),
        n_bytes=torch.tensor(n_bytes),
    )


def test_candidates_are_mapped_deduplicated_and_renormalised() -> None:
    vmap = torch.tensor([0, 5, 5, -1, 9, 12])  # ids 1 and 2 both map to 5; 3 maps nowhere
    ids = torch.tensor([[[1, 2, 3, 4], [4, 5, 1, 0]]])
    logits = torch.tensor([[[3.0, 2.0, 1.0, 0.0], [2.0, 1.0, 0.0, -1.0]]])
    align = torch.tensor([[0, 1, -1]])
    got_ids, probs, ok, kept = aligned_candidates(
        ids, logits, align, vmap, width=10, temperature=2.0
    )
    assert ok.tolist() == [[True, True, False]]
    assert kept.tolist() == [[2, 3, 0]]  # row 1: id 12 >= width is dropped
    want0 = torch.softmax(torch.tensor([3.0, 0.0]) / 2.0, dim=0)
    assert got_ids[0, 0, [0, 3]].tolist() == [5, 9]
    assert torch.allclose(probs[0, 0, [0, 3]], want0)
    assert probs[0, 0, [1, 2]].tolist() == [0.0, 0.0]
    assert got_ids[0, 1, :3].tolist() == [9, 0, 5] and probs[0, 1, 1] == 0  # 12 dropped
    assert torch.allclose(probs.sum(-1)[ok], torch.ones(2))
    assert probs[0, 2].sum() == 0


def test_fallback_is_next_token_and_reference_is_current() -> None:
    input_ids = torch.tensor([[7, 8, 9]])
    ids = torch.full((1, 3, 2), 4)
    probs = torch.tensor([[[0.5, 0.5]] * 3])
    ok = torch.tensor([[True, False, False]])
    fixed_ids, fixed_probs = gold_fallback(ids, probs, ok, input_ids)
    ref_ids, _ = gold_fallback(ids, probs, ok, input_ids, reference=True)
    assert fixed_ids[0, 1].tolist() == [9, 0]  # position 1 predicts token 2
    assert ref_ids[0, 1].tolist() == [8, 0]  # the released off-by-one: the current token
    assert fixed_probs[0, 1].tolist() == [1.0, 0.0]
    assert fixed_ids[0, 0].tolist() == [4, 4] and fixed_probs[0, 0].tolist() == [0.5, 0.5]


def test_mince_picks_lowest_ce_and_ties_go_to_the_first() -> None:
    vmap = torch.arange(10)
    input_ids = torch.tensor([[1, 2], [1, 2]])
    a = _source(
        [[[3]], [[3]]], [[[0.0]], [[0.0]]], [[0, -1], [0, -1]], nats=(2.0, 1.0), n_bytes=(1, 1)
    )
    b = _source(
        [[[4]], [[4]]], [[[0.0]], [[0.0]]], [[0, -1], [0, -1]], nats=(1.0, 1.0), n_bytes=(1, 1)
    )
    target = fuse([a, b], [vmap, vmap], input_ids, 10, FusionConfig(fusion="mince"))
    assert target.ids[0, 0, 0] == 4  # row 0: b has the lower CE
    assert target.ids[1, 0, 0] == 3  # row 1: a tie, the first source wins
    assert target.stats["picked"] == [1, 1]


def test_ce_unit_bytes_vs_tokens_changes_the_pick() -> None:
    vmap = torch.arange(10)
    input_ids = torch.tensor([[1, 2]])
    # a: 10 nats over 5 tokens covering 20 bytes; b: 8 nats over 2 tokens covering 10 bytes.
    a = _source([[[3]]], [[[0.0]]], [[0, -1]], nats=(10.0,), n_pred=(5,), n_bytes=(20,))
    b = _source([[[4]]], [[[0.0]]], [[0, -1]], nats=(8.0,), n_pred=(2,), n_bytes=(10,))
    per_byte = fuse([a, b], [vmap, vmap], input_ids, 10, FusionConfig(ce_unit="byte"))
    per_token = fuse([a, b], [vmap, vmap], input_ids, 10, FusionConfig.reference())
    assert per_byte.ids[0, 0, 0] == 3  # 0.5 nats/byte beats 0.8
    assert per_token.ids[0, 0, 0] == 3  # 2 nats/token beats 4 too
    c = _source([[[5]]], [[[0.0]]], [[0, -1]], nats=(9.0,), n_pred=(6,), n_bytes=(12,))
    assert fuse([a, c], [vmap, vmap], input_ids, 10, FusionConfig(ce_unit="byte")).ids[0, 0, 0] == 3
    assert fuse([a, c], [vmap, vmap], input_ids, 10, FusionConfig.reference()).ids[0, 0, 0] == 5


def test_avgce_weights_reference_and_fusekit() -> None:
    ce = torch.tensor([[2.0], [3.0]])
    ref = source_weights(ce, FusionConfig.reference(fusion="avgce"))
    ours = source_weights(ce, FusionConfig(fusion="avgce", ce_unit="token"))
    assert abs(float(ref[0, 0]) - 0.5213) < 1e-3  # nearly uniform
    assert abs(float(ours[0, 0]) - 1 / (1 + math.e**-1)) < 1e-6
    vmap = torch.arange(10)
    a = _source([[[3]]], [[[0.0]]], [[0, 0]], nats=(2.0,), n_pred=(1,), n_bytes=(1,))
    b = _source([[[4]]], [[[0.0]]], [[0, 0]], nats=(3.0,), n_pred=(1,), n_bytes=(1,))
    cfg = FusionConfig(fusion="avgce", ce_unit="token")
    t = fuse([a, b], [vmap, vmap], torch.tensor([[1, 2]]), 10, cfg)
    assert t.ids[0, 0].tolist() == [3, 4]
    assert torch.allclose(t.probs[0, 0], ours[:, 0])
    assert torch.allclose(t.probs.sum(-1), torch.ones(1, 2))


def test_source_equal_to_target_keeps_every_candidate(sp: Any) -> None:
    model = tiny_llama(len(sp), seed=4)
    encs = encode_chunks(sp, CORPUS[:3], 48)
    vmap = compute_vocab_map(sp, sp)
    table = token_table(sp)
    width = max(len(e) for e in encs)
    ids = torch.zeros(len(encs), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(encs):
        ids[r, : len(e)] = torch.from_numpy(e.ids)
        mask[r, : len(e)] = 1
    aligns = [align_chunk("mined", e, e, vmap, table, table) for e in encs]
    align = torch.full_like(ids, -1)
    for r, a in enumerate(aligns):
        align[r, : len(a)] = torch.from_numpy(a)
    out = source_outputs(model, ids, mask, 5)
    src = SourceBatch(
        out["topk_ids"],
        out["topk_logits"],
        align,
        out["nats"],
        out["n_pred"],
        torch.tensor([e.n_bytes for e in encs]),
    )
    labels = torch.where(mask > 0, ids, -100)
    from fusekit.strategies.fusellm.losses import next_token_mask

    target = fuse(
        [src], [torch.from_numpy(vmap)], ids, len(sp), FusionConfig(), mask=next_token_mask(labels)
    )
    assert target.stats["aligned"] == [1.0] and target.stats["kept"] == [1.0]
    real = mask.bool()
    assert torch.equal(target.ids[real], out["topk_ids"][real])
    want = torch.softmax(out["topk_logits"].float(), dim=-1)
    assert torch.allclose(target.probs[real], want[real])
    assert np.all(target.ids.numpy() < len(sp))


def test_online_step_builds_the_same_target_as_stored_top_k(bpe: Any, sp: Any) -> None:
    """The trainer's online path (top-k at aligned positions only) equals the full top-k route."""
    from types import SimpleNamespace

    from fusekit.strategies.fusellm.batching import FusionCollator, FusionDataset
    from fusekit.strategies.fusellm.examples import in_memory
    from fusekit.strategies.fusellm.losses import next_token_mask
    from fusekit.strategies.fusellm.prepare import prepare_source
    from fusekit.strategies.fusellm.trainer import FuseLLMTrainer

    model = tiny_llama(len(sp), seed=5)
    chunks = CORPUS[:6]
    target_encs = encode_chunks(bpe, chunks, 40)
    prep = prepare_source(
        sp, bpe, chunks, target_encs, align="offsets", max_len=160, progress=False
    )
    data = FusionDataset(in_memory(target_encs, [(prep.encodings, prep.align)]), [None])
    batch = FusionCollator(0, [0])([data[i] for i in range(len(data))])
    src = batch["sources"][0]
    vmaps = [torch.from_numpy(prep.vocab_map)]
    online = FuseLLMTrainer._source_batches(
        SimpleNamespace(source_models=[model], top_k=5), batch["sources"]
    )
    full = source_outputs(model, src["input_ids"], src["attention_mask"], 5)
    stored = SourceBatch(
        full["topk_ids"],
        full["topk_logits"],
        src["align"],
        full["nats"],
        full["n_pred"],
        src["n_bytes"],
    )
    mask = next_token_mask(batch["labels"])
    for config in (FusionConfig(), FusionConfig(fusion="avgce")):
        got = fuse(online, vmaps, batch["input_ids"], len(bpe), config, mask=mask)
        want = fuse([stored], vmaps, batch["input_ids"], len(bpe), config, mask=mask)
        assert torch.equal(got.ids, want.ids)
        assert torch.allclose(got.probs, want.probs, atol=1e-6)
        assert got.stats["aligned"] == want.stats["aligned"]
        assert got.stats["kept"] == pytest.approx(want.stats["kept"])
    assert 0.0 < want.stats["aligned"][0] < 1.0  # the two tokenizers really differ

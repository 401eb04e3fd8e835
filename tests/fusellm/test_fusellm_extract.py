"""Sharded extraction: rows match a direct forward; a killed run resumes to identical shards.

Also the forward itself: rows grouped by length, top-k only where asked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fusekit.strategies.fusellm.data import chunk_texts, encode_chunks
from fusekit.strategies.fusellm.extract import (
    StoreReader,
    extract_to_store,
    length_groups,
    source_outputs,
)
from tests.fusellm.conftest import CORPUS, tiny_llama


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def rows(bpe: Any) -> tuple[list[np.ndarray], list[int]]:
    encs = encode_chunks(bpe, chunk_texts(CORPUS, bpe, 24), 24)
    return [e.ids for e in encs], [e.n_bytes for e in encs]


def _extract(model: Any, rows: Any, out: Path, **kw: Any) -> dict[str, Any]:
    ids, n_bytes = rows
    return extract_to_store(
        model,
        ids,
        n_bytes,
        out,
        top_k=4,
        pad_id=0,
        batch_size=3,
        rows_per_shard=6,
        progress=False,
        meta={"model": "m"},
        **kw,
    )


def test_rows_match_a_direct_forward(rows: Any, tmp_path: Path) -> None:
    model = tiny_llama(400, seed=5)
    manifest = _extract(model, rows, tmp_path / "store")
    assert manifest["complete"] and manifest["num_rows"] == len(rows[0])
    reader = StoreReader(tmp_path / "store")
    for i in (0, 4, len(rows[0]) - 1):
        ids = torch.from_numpy(rows[0][i]).unsqueeze(0)
        out = source_outputs(model, ids, torch.ones_like(ids), 4)
        row = reader.row(i)
        assert np.array_equal(row["topk_ids"], out["topk_ids"][0].numpy())
        assert np.allclose(row["topk_logits"], out["topk_logits"][0].numpy(), atol=2e-2)
        assert row["n_pred"] == len(rows[0][i]) - 1 and row["n_bytes"] == rows[1][i]
        assert abs(row["nats"] - float(out["nats"][0])) < 1e-3


def test_interrupted_extraction_resumes_to_identical_shards(rows: Any, tmp_path: Path) -> None:
    model = tiny_llama(400, seed=6)
    _extract(model, rows, tmp_path / "whole")

    def stop_after_two(index: int) -> None:
        if index == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        _extract(model, rows, tmp_path / "resumed", on_shard=stop_after_two)
    partial = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert not partial["complete"] and [s["index"] for s in partial["shards"]] == [0, 1]
    # A shard written but never recorded (killed between rename and manifest) is redone.
    (tmp_path / "resumed" / "shard-00002.safetensors").write_bytes(b"garbage")
    (tmp_path / "resumed" / ".shard-00003.safetensors.tmp").write_bytes(b"half")

    calls: list[int] = []
    manifest = _extract(model, rows, tmp_path / "resumed", on_shard=calls.append)
    assert calls and calls[0] == 2  # shards 0 and 1 were not recomputed
    assert manifest["complete"]
    whole = sorted(p.name for p in (tmp_path / "whole").glob("shard-*"))
    resumed = sorted(p.name for p in (tmp_path / "resumed").glob("shard-*"))
    assert whole == resumed and not list((tmp_path / "resumed").glob(".*tmp"))
    for name in whole:
        assert (tmp_path / "whole" / name).read_bytes() == (
            tmp_path / "resumed" / name
        ).read_bytes()
    got = np.concatenate(
        [StoreReader(tmp_path / "resumed").row(i)["topk_ids"][:1] for i in range(len(rows[0]))]
    )
    assert len(got) == len(rows[0])  # every row present exactly once


def test_store_made_from_other_inputs_is_rebuilt(rows: Any, tmp_path: Path) -> None:
    model = tiny_llama(400, seed=7)
    _extract(model, rows, tmp_path / "s")
    ids, n_bytes = rows
    fewer = (ids[:4], n_bytes[:4])
    manifest = _extract(model, fewer, tmp_path / "s")
    assert manifest["num_rows"] == 4 and len(manifest["shards"]) == 1


def test_incomplete_store_is_refused(rows: Any, tmp_path: Path) -> None:
    model = tiny_llama(400, seed=8)

    def stop(index: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        _extract(model, rows, tmp_path / "s", on_shard=stop)
    with pytest.raises(ValueError, match="incomplete"):
        StoreReader(tmp_path / "s")


def _padded_cost(lengths: list[int], groups: list[np.ndarray], split_cost: int) -> int:
    return sum(len(g) * max(lengths[i] for i in g) + split_cost for g in groups)


def test_length_groups_cover_every_row_once_at_least_cost() -> None:
    import itertools

    lengths = [40, 7, 33, 12, 40, 3, 25, 18]
    for split_cost in (0, 16, 64, 10_000):
        groups = length_groups(lengths, split_cost)
        assert sorted(int(i) for g in groups for i in g) == list(range(len(lengths)))
        # brute force over every way to cut the length order into consecutive groups
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        best = min(
            _padded_cost(
                lengths, [np.array(order[a:b]) for a, b in itertools.pairwise(cuts)], split_cost
            )
            for n in range(len(order))
            for inner in itertools.combinations(range(1, len(order)), n)
            for cuts in [(0, *inner, len(order))]
        )
        assert _padded_cost(lengths, groups, split_cost) == best
    assert len(length_groups(lengths, 10_000)) == 1
    assert len(length_groups(lengths, 0)) == len(set(lengths))
    assert length_groups([]) == []


def _ragged_batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([40, 7, 33, 12, 40, 3, 25, 18])
    mask = (torch.arange(40)[None] < lengths[:, None]).long()
    return torch.randint(4, vocab, (len(lengths), 40), generator=g) * mask, mask


def test_grouped_forward_equals_one_padded_batch() -> None:
    model = tiny_llama(300, seed=3)
    ids, mask = _ragged_batch(300)
    one = source_outputs(model, ids, mask, 5, split_cost=None)
    grouped = source_outputs(model, ids, mask, 5, split_cost=16)
    assert len(length_groups(mask.sum(1).tolist(), 16)) > 1
    real = mask.bool()
    assert torch.equal(grouped["topk_ids"][real], one["topk_ids"][real])
    assert torch.allclose(grouped["topk_logits"][real], one["topk_logits"][real], atol=1e-5)
    assert torch.allclose(grouped["nats"], one["nats"], rtol=1e-5)
    assert torch.equal(grouped["n_pred"], one["n_pred"])
    assert torch.equal(one["n_pred"], mask.sum(1) - 1)
    # nats: summed cross-entropy of every real next token, row by row
    for r in (0, 5):
        n = int(mask[r].sum())
        logits = model(input_ids=ids[r : r + 1, :n]).logits[0, :-1]
        want = torch.nn.functional.cross_entropy(logits, ids[r, 1:n], reduction="sum")
        assert torch.allclose(one["nats"][r], want.detach(), rtol=1e-5)


def test_top_k_only_at_requested_positions() -> None:
    model = tiny_llama(300, seed=3)
    ids, mask = _ragged_batch(300)
    g = torch.Generator().manual_seed(1)
    lengths = mask.sum(1, keepdim=True)
    positions = torch.randint(0, 40, (len(ids), 20), generator=g) % lengths
    positions[torch.rand(positions.shape, generator=g) < 0.3] = -1
    full = source_outputs(model, ids, mask, 5)
    got = source_outputs(model, ids, mask, 5, positions=positions)
    where = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, 5)
    keep = (positions >= 0).unsqueeze(-1)
    assert got["topk_ids"].shape == (len(ids), 20, 5)
    assert torch.equal(got["topk_ids"], torch.where(keep, full["topk_ids"].gather(1, where), 0))
    want = torch.where(keep, full["topk_logits"].gather(1, where), 0)
    assert torch.allclose(got["topk_logits"], want, atol=1e-5)
    assert torch.equal(got["nats"], full["nats"]) and torch.equal(got["n_pred"], full["n_pred"])


def test_digests_given_are_not_computed_again(
    rows: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that hashed the rows for its store's folder passes the hashes on: the
    rows are not walked again, and the store's key is the one computed from them."""
    from fusekit.strategies.fusellm import extract

    model = tiny_llama(400, seed=9)
    first = _extract(model, rows, tmp_path / "s")
    digests = (extract.ids_hash(rows[0]), extract.counted_hash(None))

    def walked(*args: Any) -> str:
        raise AssertionError("the rows were hashed again")

    monkeypatch.setattr(extract, "ids_hash", walked)
    monkeypatch.setattr(extract, "counted_hash", walked)
    again = _extract(model, rows, tmp_path / "s", digests=digests)
    assert again["key"] == first["key"] and again["shards"] == first["shards"]

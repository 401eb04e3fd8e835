"""Sharded extraction: rows match a direct forward; a killed run resumes to identical shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fusekit.strategies.fusellm.data import chunk_texts, encode_chunks
from fusekit.strategies.fusellm.extract import StoreReader, extract_to_store, source_outputs
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

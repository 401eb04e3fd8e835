"""Training examples and batches: the target's tokens plus, per source, what fusion needs.

An example is one text chunk or conversation (``examples``).  For every source it
carries the alignment (source position per target position, ``-1`` for none) and
either the source's stored top-k rows (offline) or the source's own token ids, which
the trainer runs through the in-memory source model (online).  The collator pads
everything; the fused target itself is built in the training step, on the
training device, by the same ``fusion.fuse`` in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class FusionDataset:
    """A torch-compatible map dataset over the cached examples (``examples.schema``):
    rows of the memory-mapped Arrow file, plus each offline source's top-k store."""

    def __init__(self, rows: Any, stores: Sequence[Any]) -> None:
        self.rows = rows
        # a StoreReader (offline) or None (online) per source
        self.stores = list(stores)
        if any(store is not None and len(store) != len(rows) for store in stores):
            raise ValueError("every source's store needs a row per example")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[int(i)]
        # per chunk, which target tokens carry the loss (None: all); the collator turns
        # the rest into -100 labels, and both losses (CLM and fusion) follow the labels
        item: dict[str, Any] = {
            "input_ids": np.asarray(row["input_ids"], dtype=np.int64),
            "n_bytes": row["n_bytes"],
            "scored": _array(row["scored"], bool),
            "sources": [],
        }
        for n, store in enumerate(self.stores):
            entry: dict[str, Any] = {"align": np.asarray(row[f"s{n}_align"], dtype=np.int64)}
            if store is not None:
                entry.update(store.row(int(i)))
            else:
                entry["input_ids"] = np.asarray(row[f"s{n}_ids"], dtype=np.int64)
                entry["n_bytes"] = row[f"s{n}_n_bytes"]
                entry["counted"] = _array(row[f"s{n}_counted"], bool)
            item["sources"].append(entry)
        return item


def _array(values: Any, dtype: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=dtype)


def _pad2(rows: Sequence[np.ndarray], value: int, width: int | None = None) -> np.ndarray:
    width = width if width is not None else max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    for k, r in enumerate(rows):
        out[k, : len(r)] = r[:width]
    return out


def _pad3(rows: Sequence[np.ndarray], dtype: Any) -> np.ndarray:
    width = max(len(r) for r in rows)
    k = rows[0].shape[-1]
    out = np.zeros((len(rows), max(width, 1), k), dtype=dtype)
    for j, r in enumerate(rows):
        out[j, : len(r)] = r
    return out


class FusionCollator:
    """Pads a list of ``FusionDataset`` items into tensors (right padding, masked)."""

    def __init__(self, pad_id: int, source_pad_ids: Sequence[int]) -> None:
        self.pad_id = pad_id
        self.source_pad_ids = list(source_pad_ids)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids = [it["input_ids"] for it in items]
        width = max(len(r) for r in ids)
        input_ids = _pad2(ids, self.pad_id, width)
        mask = _pad2([np.ones(len(r), dtype=np.int64) for r in ids], 0, width)
        scored = _pad2(
            [np.ones(len(r), dtype=np.int64) if it.get("scored") is None
             else np.asarray(it["scored"], dtype=np.int64) for r, it in zip(ids, items, strict=True)],
            0, width,
        )  # fmt: skip
        labels = np.where((mask > 0) & (scored > 0), input_ids, -100)
        n_pred = np.array([max(len(r) - 1, 1) for r in ids], dtype=np.float64)
        batch: dict[str, Any] = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
            "bytes_per_token": torch.tensor([it["n_bytes"] for it in items], dtype=torch.float32)
            / torch.from_numpy(n_pred).float(),
            "sources": [],
        }
        for s, pad in enumerate(self.source_pad_ids):
            entries = [it["sources"][s] for it in items]
            out: dict[str, Any] = {
                "align": torch.from_numpy(_pad2([e["align"] for e in entries], -1, width)),
                "n_bytes": torch.tensor([e["n_bytes"] for e in entries], dtype=torch.long),
            }
            if "topk_ids" in entries[0]:
                out["topk_ids"] = torch.from_numpy(
                    _pad3([e["topk_ids"] for e in entries], np.int64)
                )
                out["topk_logits"] = torch.from_numpy(
                    _pad3([e["topk_logits"] for e in entries], np.float32)
                )
                out["nats"] = torch.tensor([e["nats"] for e in entries], dtype=torch.float32)
                out["n_pred"] = torch.tensor([e["n_pred"] for e in entries], dtype=torch.long)
            else:
                src = [e["input_ids"] for e in entries]
                out["input_ids"] = torch.from_numpy(_pad2(src, pad))
                out["attention_mask"] = torch.from_numpy(
                    _pad2([np.ones(len(r), dtype=np.int64) for r in src], 0)
                )
                out["counted"] = torch.from_numpy(_pad2(
                    [np.ones(len(r), dtype=np.int64) if e.get("counted") is None
                     else np.asarray(e["counted"], dtype=np.int64)
                     for r, e in zip(src, entries, strict=True)], 0,
                ) > 0)  # fmt: skip
            batch["sources"].append(out)
        return batch

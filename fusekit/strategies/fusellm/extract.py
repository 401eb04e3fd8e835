"""Source distributions: top-k ids and logits per position, plus cross-entropy on the gold text.

The reference runs each source over the corpus once and stores its top-k per
position: the expensive stage at scale, and the one that gets killed.  Here it
is written as **shards** so that a killed run resumes where it stopped, with
no duplicated and no missing rows:

    <dir>/manifest.json             what this store is and which shards are done
    <dir>/shard-00000.safetensors   rows [0, rows_per_shard)
    <dir>/shard-00001.safetensors   ...

Each shard holds, for its R rows padded to the longest row L of that shard:

    topk_ids     int32   [R, L, k]   source token ids, best first
    topk_logits  float16 [R, L, k]   their raw logits (temperature is applied later)
    lengths      int32   [R]         real length of each row (the rest is padding)
    nats         float32 [R]         summed cross-entropy of the gold next tokens
    n_pred       int32   [R]         number of predicted tokens (positions 1..len-1)
    n_bytes      int32   [R]         UTF-8 bytes those tokens cover (per-byte CE unit)
    rows         int64   [R]         global row indices

A shard is written under a temporary name and renamed into place; only then is
it added to the manifest (also written to a temporary file and renamed).  A
kill at any moment therefore leaves either a complete, recorded shard or one
that is recomputed — identically, since batches never cross shard boundaries.
The manifest's ``key`` (model, tokenizer, data and settings hashes) refuses to
resume a store made from anything else.

``source_outputs`` is the same computation for one batch; the online mode
calls it inside the training step instead of reading a store, with top-k
taken only at the positions the alignment uses.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusekit.log import bars_disabled
from fusekit.strategies.fusellm.logits import check_slicing, final_hidden, sliced_topk_and_nll

FORMAT = "fusekit.fusellm.topk"
VERSION = 1
MANIFEST = "manifest.json"


#: An extra forward call is worth it when it saves at least this many padded positions.
SPLIT_COST = 512


def length_groups(lengths: Sequence[int], split_cost: int = SPLIT_COST) -> list[np.ndarray]:
    """Rows grouped by length so that padding each group to its own longest row wastes little.

    Minimises ``sum(rows × longest row) + split_cost × groups`` over groups of
    consecutive rows in length order (an O(n²) dynamic programme on a batch).
    Returns the row indices of each group, longest rows first.
    """
    lens = np.asarray(lengths, dtype=np.int64)
    n = len(lens)
    if n == 0:
        return []
    order = np.argsort(-lens, kind="stable")
    longest = lens[order]
    # best[j]: cheapest cover of the j longest rows; a group of rows i..j-1 costs
    # (j - i) × longest[i] + split_cost.
    best = np.zeros(n + 1, dtype=np.int64)
    cut = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        i = np.arange(j)
        cost = best[:j] + (j - i) * longest[:j] + split_cost
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    groups = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = int(cut[j])
    return groups[::-1]


def source_outputs(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    top_k: int,
    *,
    positions: Any = None,
    counted: Any = None,
    split_cost: int | None = SPLIT_COST,
) -> dict[str, Any]:
    """Top-k ids/logits per position and summed next-token cross-entropy per row (no grad).

    Rows run in groups of similar length (``length_groups``), each cut to its
    own longest row: a causal model's outputs at a row's real positions do
    not depend on padding to its right, so this only drops wasted work.
    ``split_cost=None`` runs the batch in one call.  With ``positions [B, P]``
    the top-k is taken only there (``topk_ids[b, j]`` is the top-k at source
    position ``positions[b, j]``; entries ``< 0`` give zeros) — what a training
    step needs, instead of every position.  Padding positions hold zeros.  The
    output layer runs a slice of positions at a time (``logits.py``), so memory
    holds a few slices' worth of logits, never ``[rows, length, vocab]``.  ``counted
    [B, L]`` (bool) limits the cross-entropy to those positions' predictions.
    """
    import torch

    batch, width = input_ids.shape
    present = attention_mask > 0
    if counted is not None:
        counted = counted.to(input_ids.device)
    # Keep every column up to a row's last real token (right padding is cut, nothing else).
    cols = torch.arange(1, width + 1, device=input_ids.device)
    ends = (present * cols).amax(dim=1).tolist() if width else [0] * batch
    groups = [np.arange(batch)] if split_cost is None else length_groups(ends, split_cost)
    span = width if positions is None else positions.shape[1]
    topk_ids = topk_logits = None
    nats = torch.zeros(batch, dtype=torch.float32, device=input_ids.device)
    n_pred = torch.zeros(batch, dtype=torch.long, device=input_ids.device)
    with torch.no_grad():
        for rows in groups:
            w = max(int(max(ends[r] for r in rows)), 1)
            index = torch.as_tensor(rows, dtype=torch.long, device=input_ids.device)
            ids, mask = input_ids[index, :w], attention_mask[index, :w]
            check_slicing(model, ids, mask)
            hidden = final_hidden(model, ids, mask).flatten(0, 1)
            # Position t predicts token t + 1; the last column has none and is masked.
            gold = torch.roll(ids, -1, dims=1)
            where: tuple[torch.Tensor, torch.Tensor | slice]
            if positions is None:
                wanted, where = None, (index, slice(0, w))
            else:  # only the positions asked for get a top-k
                row, col = torch.nonzero(positions[index] >= 0, as_tuple=True)
                wanted = row * w + positions[index][row, col].clamp(max=w - 1)
                where = (index[row], col)
            values, top_ids, nll = sliced_topk_and_nll(model, hidden, gold.flatten(), top_k,
                                                       wanted)  # fmt: skip
            if positions is None:
                values, top_ids = values.view(len(rows), w, -1), top_ids.view(len(rows), w, -1)
            if topk_ids is None:
                topk_ids = top_ids.new_zeros(batch, span, top_ids.shape[-1])
                topk_logits = values.new_zeros(batch, span, values.shape[-1])
            topk_ids[where] = top_ids
            topk_logits[where] = values  # type: ignore[index]
            valid = torch.zeros_like(mask, dtype=torch.bool)
            valid[:, :-1] = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
            if counted is not None:
                valid &= counted[index, :w]
            nats[index] = (nll.view_as(gold) * valid).sum(dim=1)
            n_pred[index] = valid.sum(dim=1)
    return {"topk_ids": topk_ids, "topk_logits": topk_logits, "nats": nats, "n_pred": n_pred}


def store_key(**parts: Any) -> str:
    """A stable hash of what a store depends on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def counted_hash(counted: Sequence[np.ndarray | None] | None) -> str | None:
    """A hash of the rows' CE positions; None when every row counts every position."""
    if counted is None or all(c is None for c in counted):
        return None
    digest = hashlib.sha256()
    for c in counted:
        digest.update(b"-" if c is None else np.packbits(np.asarray(c, dtype=bool)).tobytes())
        digest.update(b"|" if c is None else str(len(c)).encode())
    return digest.hexdigest()


def ids_hash(rows: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for r in rows:
        digest.update(np.asarray(r, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _pad(rows: Sequence[np.ndarray], value: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, r in enumerate(rows):
        out[k, : len(r)] = r
        mask[k, : len(r)] = 1
    return out, mask


def _compute_shard(
    model: Any,
    rows: Sequence[np.ndarray],
    n_bytes: Sequence[int],
    first_row: int,
    counted: Sequence[np.ndarray | None],
    *,
    top_k: int,
    batch_size: int,
    pad_id: int,
    progress: Any,
) -> dict[str, np.ndarray]:
    import torch

    width = max(len(r) for r in rows)
    k_eff = top_k
    ids = logits = None
    nats = np.zeros(len(rows), dtype=np.float32)
    n_pred = np.zeros(len(rows), dtype=np.int32)
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        inp, mask = _pad(part, pad_id)
        rows_counted = counted[start : start + batch_size]
        keep = None
        if any(c is not None for c in rows_counted):
            keep = torch.from_numpy(_pad([c if c is not None else np.ones(len(r), dtype=np.int64)
                                          for c, r in zip(rows_counted, part, strict=True)],
                                         0)[0] > 0)  # fmt: skip
        out = source_outputs(
            model, torch.from_numpy(inp).to(device), torch.from_numpy(mask).to(device), top_k,
            counted=keep,
        )  # fmt: skip
        k_eff = out["topk_ids"].shape[-1]
        if ids is None or logits is None:
            ids = np.zeros((len(rows), width, k_eff), dtype=np.int32)
            logits = np.zeros((len(rows), width, k_eff), dtype=np.float16)
        sl = slice(start, start + len(part))
        length = inp.shape[1]
        ids[sl, :length] = out["topk_ids"].cpu().numpy().astype(np.int32)
        logits[sl, :length] = out["topk_logits"].float().cpu().numpy().astype(np.float16)
        nats[sl] = out["nats"].cpu().numpy()
        n_pred[sl] = out["n_pred"].cpu().numpy()
        if progress is not None:
            progress.update(len(part))
    assert ids is not None and logits is not None  # rows is never empty (``width`` above)
    return {
        "topk_ids": ids,
        "topk_logits": logits,
        "lengths": np.array([len(r) for r in rows], dtype=np.int32),
        "nats": nats,
        "n_pred": n_pred,
        "n_bytes": np.asarray(n_bytes, dtype=np.int32),
        "rows": np.arange(first_row, first_row + len(rows), dtype=np.int64),
    }


def extract_to_store(
    model: Any,
    rows: Sequence[np.ndarray],
    n_bytes: Sequence[int],
    out_dir: str | Path,
    *,
    top_k: int,
    pad_id: int,
    batch_size: int = 8,
    rows_per_shard: int = 512,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    desc: str = "extract",
    on_shard: Callable[[int], None] | None = None,
    counted: Sequence[np.ndarray | None] | None = None,
    digests: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
    """Run ``model`` over token-id ``rows`` and store top-k per position; resumes a partial store.

    ``meta`` (model/tokenizer hashes, names) goes into the manifest and into its
    ``key``; a store whose key differs is cleared and rebuilt.  ``on_shard(i)``
    is called after shard ``i`` is committed.  ``counted`` (per row, ``source_outputs``'
    ``counted``; None: every position) sets what each row's cross-entropy sums.
    ``digests`` is ``(ids_hash(rows), counted_hash(counted))`` where the caller already
    walked the rows for them (each walk reads every row of a corpus).  Returns the
    manifest.
    """
    from safetensors.numpy import save_file
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rows_per_shard % batch_size:
        rows_per_shard += batch_size - rows_per_shard % batch_size
    meta = dict(meta or {})
    data, positions = digests if digests is not None else (ids_hash(rows), counted_hash(counted))
    key = store_key(
        meta=meta,
        data=data,
        n_bytes=hashlib.sha256(np.asarray(n_bytes, dtype=np.int64).tobytes()).hexdigest(),
        # stores of text alone keep the key they had before CE positions existed
        **({"counted": positions} if positions else {}),
        top_k=top_k,
        rows_per_shard=rows_per_shard,
        batch_size=batch_size,
        pad_id=pad_id,
    )
    manifest_path = out / MANIFEST
    manifest: dict[str, Any] | None = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            manifest = None
    if manifest is None or manifest.get("key") != key:
        for stale in out.glob("shard-*.safetensors"):
            stale.unlink()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "key": key,
            "meta": meta,
            "top_k": top_k,
            "num_rows": len(rows),
            "rows_per_shard": rows_per_shard,
            "shards": [],
            "complete": False,
        }
        _write_json(manifest_path, manifest)
    for tmp in out.glob(".shard-*.tmp"):
        tmp.unlink()
    done = {s["index"] for s in manifest["shards"] if (out / s["file"]).is_file()}
    manifest["shards"] = [s for s in manifest["shards"] if s["index"] in done]
    n_shards = (len(rows) + rows_per_shard - 1) // rows_per_shard
    rows_done = sum(s["stop"] - s["start"] for s in manifest["shards"])
    was_training = getattr(model, "training", False)
    model.eval()
    bar = tqdm(
        total=len(rows),
        initial=rows_done,
        desc=desc,
        disable=True if not progress else bars_disabled(),
        unit="row",
    )
    try:
        for index in range(n_shards):
            if index in done:
                continue
            start, stop = index * rows_per_shard, min(len(rows), (index + 1) * rows_per_shard)
            tensors = _compute_shard(
                model,
                rows[start:stop],
                n_bytes[start:stop],
                start,
                counted[start:stop] if counted is not None else [None] * (stop - start),
                top_k=top_k,
                batch_size=batch_size,
                pad_id=pad_id,
                progress=bar,
            )
            name = f"shard-{index:05d}.safetensors"
            tmp = out / f".{name}.tmp"
            save_file(tensors, str(tmp))
            os.replace(tmp, out / name)
            manifest["shards"].append({"index": index, "file": name, "start": start, "stop": stop})
            manifest["shards"].sort(key=lambda s: s["index"])
            _write_json(manifest_path, manifest)
            if on_shard is not None:
                on_shard(index)
    finally:
        bar.close()
        if was_training:
            model.train()
    manifest["complete"] = len(manifest["shards"]) == n_shards
    _write_json(manifest_path, manifest)
    return manifest


class StoreReader:
    """Random access to the rows of a complete store (shards opened lazily, per process)."""

    def __init__(self, store_dir: str | Path) -> None:
        self.dir = Path(store_dir)
        self.manifest = json.loads((self.dir / MANIFEST).read_text())
        if not self.manifest.get("complete"):
            raise ValueError(f"{self.dir}: the logits store is incomplete; run extraction again")
        self.rows_per_shard = int(self.manifest["rows_per_shard"])
        self.files = {s["index"]: s["file"] for s in self.manifest["shards"]}
        self._open: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self.manifest["num_rows"])

    def _shard(self, index: int) -> Any:
        # safe_open memory-maps the file: a row read touches only that row's bytes,
        # so shuffled access does not load whole shards.
        if index not in self._open:
            from safetensors import safe_open

            self._open[index] = safe_open(str(self.dir / self.files[index]), framework="numpy")
        return self._open[index]

    def row(self, i: int) -> dict[str, Any]:
        """``topk_ids [L, k]``, ``topk_logits [L, k]`` and the row's CE figures."""
        shard = self._shard(i // self.rows_per_shard)
        r = i % self.rows_per_shard

        def scalar(name: str) -> Any:
            return shard.get_slice(name)[r : r + 1][0]

        length = int(scalar("lengths"))
        return {
            "topk_ids": shard.get_slice("topk_ids")[r : r + 1, :length][0],
            "topk_logits": shard.get_slice("topk_logits")[r : r + 1, :length][0],
            "nats": float(scalar("nats")),
            "n_pred": int(scalar("n_pred")),
            "n_bytes": int(scalar("n_bytes")),
        }

    def __getstate__(self) -> dict[str, Any]:
        # Open handles do not pickle (DataLoader workers); each process reopens its own.
        return {**self.__dict__, "_open": {}}

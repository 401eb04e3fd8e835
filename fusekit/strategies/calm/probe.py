"""Which augment layers hold what the composition needs — read off with linear probes.

CALM can only pass on what the augment's chosen layers hold *at the positions
the anchor may read*.  For KV arithmetic that is each key's value at the key's
own position.  A ridge-regression probe per layer, fitted on the held-in keys'
positions and scored on the held-out keys', says whether that layer stores the
value in a form that generalises across keys — exactly what a composition
trained on held-in keys must exploit on held-out ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from fusekit.errors import DataError
from fusekit.strategies.calm.layers import decoder_layers
from fusekit.tasks.kv import KVConfig, key_split, key_values, kv_examples


@torch.no_grad()
def layer_states(model: Any, input_ids: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """``[embed, block 0, …, block N-1]`` residual streams, each ``[n, T, D]`` (pre final norm)."""

    blocks = decoder_layers(model)
    chunks: list[list[torch.Tensor]] = [[] for _ in range(len(blocks) + 1)]
    handles = []
    current: dict[int, torch.Tensor] = {}

    def pre(module: Any, args: Any, kwargs: Any) -> None:
        current[0] = args[0] if args else kwargs["hidden_states"]

    def make(i: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            current[i + 1] = output[0] if isinstance(output, tuple) else output

        return hook

    handles.append(blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
    handles += [b.register_forward_hook(make(i)) for i, b in enumerate(blocks)]
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            model(input_ids=input_ids[start : start + batch_size], use_cache=False)
            for i in range(len(chunks)):
                chunks[i].append(current[i].float())
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(c) for c in chunks]


def ridge_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    classes: int,
    l2: float = 1e-2,
) -> tuple[float, float]:
    """Train and test accuracy of a one-hot ridge regression (a linear classifier)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xs = torch.cat([(train_x - mean) / std, torch.ones(len(train_x), 1)], 1)
    xt = torch.cat([(test_x - mean) / std, torch.ones(len(test_x), 1)], 1)
    target = torch.nn.functional.one_hot(train_y, classes).float()
    eye = torch.eye(xs.shape[1]) * l2 * len(xs)
    w = torch.linalg.solve(xs.T @ xs + eye, xs.T @ target)
    train_acc = float(((xs @ w).argmax(1) == train_y).float().mean())
    test_acc = float(((xt @ w).argmax(1) == test_y).float().mean())
    return train_acc, test_acc


def probe_key_values(
    model: Any,
    input_ids: torch.Tensor,
    key_positions: torch.Tensor,
    key_values: torch.Tensor,
    held_in: torch.Tensor,
    classes: int,
    layers: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Per layer (-1 = embedding output): probe accuracy on held-in and on held-out keys.

    ``key_positions`` ``[n, 2]`` are (row, position) of key tokens, ``key_values``
    their values and ``held_in`` whether each key is a held-in key.
    """
    states = layer_states(model, input_ids)
    rows = []
    for index, h in enumerate(states):
        layer = index - 1
        if layers is not None and layer not in layers:
            continue
        feats = h[key_positions[:, 0], key_positions[:, 1]]
        train_acc, test_acc = ridge_probe(
            feats[held_in], key_values[held_in], feats[~held_in], key_values[~held_in], classes
        )
        rows.append(
            {"layer": layer, "held_in": round(train_acc, 4), "held_out": round(test_acc, 4)}
        )
    return rows


def probe_kv_augment(
    model: Any,
    tokenizer: Any,
    kv: Any,
    *,
    n: int = 1500,
    seed: int = 99,
    layers: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """``probe_key_values`` on ``n`` fresh KV-arithmetic prompts, for an augment of the KV tasks.

    The prompts are exactly what the composition's augment reads (``k17 + k5 =``),
    every key occurrence is a probe point, and the fit uses held-in keys only, as
    CALM's training data does.  ``kv`` is a ``KVConfig`` or a mapping of its fields.
    """

    cfg = KVConfig.from_value(kv)
    ids, where, values, inside = _key_occurrences(tokenizer, cfg, n, seed)
    return probe_key_values(
        model,
        ids,
        where,
        values,
        inside,
        cfg.value_max + 1,
        layers=layers,
    )


@torch.no_grad()
def head_reads_values(
    model: Any, tokenizer: Any, kv: Any, *, n: int = 1500, seed: int = 99, batch_size: int = 32
) -> dict[str, float]:
    """How often the augment's own output head, restricted to the digits, names a key's
    value at the token that ends the key, on held-in and on held-out keys.

    The probe above asks what a read-out fitted on held-in keys finds; this asks what
    the augment itself says there, with nothing fitted.  An augment trained on
    ``kv_tag`` predicts the value as that position's next token; one trained on a
    text-style ``kv_lookup`` predicts the space before it, so its digits rank the
    value only as an afterthought.  One-digit values only.
    """

    cfg = KVConfig.from_value(kv)
    if cfg.value_max > 9:
        raise DataError(
            f"the head read-out ranks one-digit values; kv.value_max={cfg.value_max} "
            "writes some values in several tokens"
        )
    ids, where, values, inside = _key_occurrences(tokenizer, cfg, n, seed)
    digits = torch.tensor(
        [
            tokenizer(str(d), add_special_tokens=False)["input_ids"][-1]
            for d in range(cfg.value_max + 1)
        ]
    )
    picked = []
    for start in range(0, ids.shape[0], batch_size):
        rows = (where[:, 0] >= start) & (where[:, 0] < start + batch_size)
        logits = model(input_ids=ids[start : start + batch_size], use_cache=False).logits
        at = where[rows]
        picked.append(logits[at[:, 0] - start, at[:, 1]][:, digits])
    right = torch.cat(picked).argmax(-1) == values
    return {
        "held_in": round(float(right[inside].float().mean()), 4),
        "held_out": round(float(right[~inside].float().mean()), 4),
    }


def _key_occurrences(
    tokenizer: Any, cfg: KVConfig, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` fresh KV-arithmetic prompts as padded ids, and each key occurrence in them:
    (row, position of the token that ends the key), its value, whether it is held in.

    The prompts are exactly what the composition's augment reads (``k17 + k5 =``).
    """
    if n < 1:
        raise DataError(f"a KV probe needs at least one prompt, got n={n}")
    table, held_in = key_values(cfg), set(key_split(cfg)[0])
    records = kv_examples("kv_arithmetic", n, cfg=cfg, seed=seed)
    if cfg.style == "text":
        encoded, found = _text_key_tokens(tokenizer, [r["prompt"] for r in records], table)
    else:
        encoded = [list(tokenizer(r["prompt"])["input_ids"]) for r in records]
        found = [
            [(pos, name) for pos, name in enumerate(tokenizer.convert_ids_to_tokens(e))
             if name in table]
            for e in encoded
        ]  # fmt: skip
    width = max(len(e) for e in encoded)
    ids = torch.tensor([e + [tokenizer.pad_token_id] * (width - len(e)) for e in encoded])
    where, values, inside = [], [], []
    for row, tokens in enumerate(found):
        for pos, name in tokens:
            where.append((row, pos))
            values.append(table[name])
            inside.append(name in held_in)
    return ids, torch.tensor(where), torch.tensor(values), torch.tensor(inside)


def _text_key_tokens(
    tokenizer: Any, prompts: Sequence[str], table: dict[str, int]
) -> tuple[list[list[int]], list[list[tuple[int, str]]]]:
    """Ids of each prompt, and (position, key) for each key word of it.

    A word key spans several tokens of a real tokenizer; the probe point is the token
    that ends the word, the first position where the whole key has been read (and
    where an augment trained on ``kv_tag`` predicts its value, and one trained on a
    text-style ``kv_lookup`` the space before it).
    """
    encoded, found = [], []
    for prompt in prompts:
        enc = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=True)
        ends = {int(end): pos for pos, (_, end) in enumerate(enc["offset_mapping"])}
        hits = []
        for match in re.finditer(r"[a-z]+", prompt):
            if match.group() in table and match.end() in ends:
                hits.append((ends[match.end()], match.group()))
        encoded.append(list(enc["input_ids"]))
        found.append(hits)
    return encoded, found

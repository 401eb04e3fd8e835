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
from dataclasses import dataclass
from typing import Any

import torch

from fusekit.errors import DataError
from fusekit.strategies.calm.layers import decoder_layers
from fusekit.tasks.kv import KVConfig, key_split, key_values, kv_examples


@dataclass(frozen=True)
class KeyReads:
    """What one pass over KV-arithmetic prompts finds at each key occurrence.

    ``states[i]`` is ``[occurrences, D]``: layer ``i - 1``'s residual stream (pre
    final norm; index 0 is the embedding output) at the token that ends the key.
    ``digits`` is ``[occurrences, value_max + 1]``: the output head's scores for the
    digit tokens there (``None`` unless asked for).  ``values`` and ``keys`` say
    which key each occurrence is and its value; which keys are held in depends on
    the split, so the same pass serves the plain and the balanced split (their
    prompts are the same).
    """

    states: list[torch.Tensor]
    digits: torch.Tensor | None
    values: torch.Tensor
    keys: tuple[str, ...]

    def held_in(self, kv: Any) -> torch.Tensor:
        """Whether each occurrence is a held-in key under ``kv``'s split of the keys."""
        inside = set(key_split(KVConfig.from_value(kv))[0])
        return torch.tensor([key in inside for key in self.keys])


@torch.no_grad()
def read_keys(
    model: Any,
    tokenizer: Any,
    kv: Any,
    *,
    n: int = 1500,
    seed: int = 99,
    head: bool = False,
    batch_size: int = 64,
) -> KeyReads:
    """Run ``model`` once over ``n`` fresh KV-arithmetic prompts and keep, at every key
    occurrence, each layer's state (and, with ``head``, the digits' scores).

    The prompts are exactly what the composition's augment reads (``k17 + k5 =``).
    Only the key positions are kept: all states of all layers of 1,500 prompts would
    take gigabytes.  ``head`` ranks one-digit values only.
    """
    cfg = KVConfig.from_value(kv)
    digit_ids: list[int] = []
    if head:
        if cfg.value_max > 9:
            raise DataError(
                f"the head read-out ranks one-digit values; kv.value_max={cfg.value_max} "
                "writes some values in several tokens"
            )
        digit_ids = [
            tokenizer(str(d), add_special_tokens=False)["input_ids"][-1]
            for d in range(cfg.value_max + 1)
        ]
    ids, where, values, keys = _key_occurrences(tokenizer, cfg, n, seed)
    blocks = decoder_layers(model)
    current: dict[int, torch.Tensor] = {}

    def pre(module: Any, args: Any, kwargs: Any) -> None:
        current[0] = args[0] if args else kwargs["hidden_states"]

    def make(i: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            current[i + 1] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
    handles += [b.register_forward_hook(make(i)) for i, b in enumerate(blocks)]
    states: list[list[torch.Tensor]] = [[] for _ in range(len(blocks) + 1)]
    digits: list[torch.Tensor] = []
    try:
        for start in range(0, ids.shape[0], batch_size):
            out = model(input_ids=ids[start : start + batch_size], use_cache=False)
            at = where[(where[:, 0] >= start) & (where[:, 0] < start + batch_size)]
            rows, cols = at[:, 0] - start, at[:, 1]
            for i, chunk in enumerate(states):
                chunk.append(current[i][rows, cols].float())
            if head:
                digits.append(out.logits[rows, cols][:, digit_ids].float())
    finally:
        for handle in handles:
            handle.remove()
    return KeyReads(
        states=[torch.cat(chunk) for chunk in states],
        digits=torch.cat(digits) if head else None,
        values=values,
        keys=keys,
    )


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


def probe_reads(
    reads: KeyReads, kv: Any, layers: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """Per layer (-1 = embedding output): accuracy of a ridge probe fitted on the held-in
    keys' occurrences, on those (held_in) and on the held-out keys' (held_out)."""
    cfg = KVConfig.from_value(kv)
    inside = reads.held_in(cfg)
    rows = []
    for index, feats in enumerate(reads.states):
        layer = index - 1
        if layers is not None and layer not in layers:
            continue
        train_acc, test_acc = ridge_probe(
            feats[inside], reads.values[inside], feats[~inside], reads.values[~inside],
            cfg.value_max + 1,
        )  # fmt: skip
        rows.append(
            {"layer": layer, "held_in": round(train_acc, 4), "held_out": round(test_acc, 4)}
        )
    return rows


def head_reads(reads: KeyReads, kv: Any) -> dict[str, float]:
    """How often the output head's top digit at a key names that key's value.

    The probe asks what a read-out fitted on held-in keys finds; this asks what the
    augment itself says there, with nothing fitted.  An augment trained on ``kv_tag``
    predicts the value as that position's next token; one trained on a text-style
    ``kv_lookup`` predicts the space before it, so its digits rank the value only as
    an afterthought.
    """
    if reads.digits is None:
        raise ValueError("these reads were taken without the head: read_keys(..., head=True)")
    right = reads.digits.argmax(-1) == reads.values
    inside = reads.held_in(kv)
    return {
        "held_in": round(float(right[inside].float().mean()), 4),
        "held_out": round(float(right[~inside].float().mean()), 4),
    }


def probe_kv_augment(
    model: Any,
    tokenizer: Any,
    kv: Any,
    *,
    n: int = 1500,
    seed: int = 99,
    layers: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """``probe_reads`` on ``n`` fresh KV-arithmetic prompts, under ``kv``'s split of the keys.

    Every key occurrence is a probe point and the fit uses held-in keys only, as
    CALM's training data does.  ``kv`` is a ``KVConfig`` or a mapping of its fields.
    """
    return probe_reads(read_keys(model, tokenizer, kv, n=n, seed=seed), kv, layers)


def head_reads_values(
    model: Any, tokenizer: Any, kv: Any, *, n: int = 1500, seed: int = 99, batch_size: int = 32
) -> dict[str, float]:
    """``head_reads`` on ``n`` fresh KV-arithmetic prompts (one-digit values only)."""
    reads = read_keys(model, tokenizer, kv, n=n, seed=seed, head=True, batch_size=batch_size)
    return head_reads(reads, kv)


def _key_occurrences(
    tokenizer: Any, cfg: KVConfig, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """``n`` fresh KV-arithmetic prompts as padded ids, and each key occurrence in them:
    (row, position of the token that ends the key), its value and its name.

    The prompts are exactly what the composition's augment reads (``k17 + k5 =``).
    """
    if n < 1:
        raise DataError(f"a KV probe needs at least one prompt, got n={n}")
    table = key_values(cfg)
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
    where, names = [], []
    for row, tokens in enumerate(found):
        for pos, name in tokens:
            where.append((row, pos))
            names.append(name)
    values = torch.tensor([table[name] for name in names])
    return ids, torch.tensor(where), values, tuple(names)


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

"""Iterative decoding of a composed model, with one KV cache per model.

Every generated token is fed to the anchor *and* to each augment model, each
with its own ``DynamicCache``; the augment's new states are projected and
appended to the cross-attention memory, which therefore grows by one position
per step (shared tokenizer).  ``augment_mode="encoder"`` (the paper's
ablation) computes the augment once from the prompt and never feeds it again.

Shared-tokenizer batches decode together (left padding; position ids skip the
pads).  With a different-tokenizer augment each row decodes on its own: the
augment follows the anchor's decoded text through ``tokens.retokenize_tail``,
and when the augment's last tokens change (``"12"`` becomes ``"123"``) its cache
and memory are cropped to the common prefix and the anchor positions that could
read the dropped tokens are recomputed, so cached decoding matches recomputing
everything from scratch.

``use_cache=False`` recomputes the whole prefix at every step; it exists as the
reference the cached path is tested against, and for benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

import torch

from fusekit.strategies.calm.masks import offset_keys, positions_from_mask
from fusekit.strategies.calm.tokens import Tokens, decoded_ends, encode_text, retokenize_tail

if TYPE_CHECKING:  # modeling calls generate(); these are the types it passes in
    from fusekit.strategies.calm.modeling import ComposedModel, Memory


def pick_next(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Greedy argmax, or a sample at ``temperature`` from the ``top_k`` most likely tokens."""
    if not do_sample:
        return logits.argmax(-1)
    scores = logits.float() / max(float(temperature), 1e-6)
    if top_k:
        kth = scores.topk(min(int(top_k), scores.shape[-1]), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _crop(cache: Any, keep: int) -> None:
    remove = cache.get_seq_length() - keep
    if remove > 0:
        cache.crop(-remove)


@torch.no_grad()
def generate(
    model: ComposedModel,
    input_ids: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    use_cache: bool = True,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    prompts: list[str] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``[B, T + n]``: the (left-padded) prompts followed by up to ``max_new_tokens`` tokens.

    Rows that emit ``eos_token_id`` are padded with ``pad_token_id`` (default:
    the EOS id) afterwards; decoding stops when every row has finished.
    ``prompts`` (texts) may replace ``input_ids``; they are tokenised by the
    anchor's tokenizer with left padding.
    """
    tok = model.anchor_tokenizer
    if prompts is not None:
        input_ids, attention_mask = _encode_prompts(tok, prompts)
    if input_ids is None:
        raise ValueError("give input_ids or prompts")
    if eos_token_id is None and tok is not None:
        eos_token_id = tok.eos_token_id
    stops = (
        []
        if eos_token_id is None
        else (
            [int(e) for e in eos_token_id]
            if isinstance(eos_token_id, (list, tuple))
            else [int(eos_token_id)]
        )
    )
    if pad_token_id is None:
        pad_token_id = stops[0] if stops else 0
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    model.eval()
    args = _Decoding(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        use_cache=use_cache,
        temperature=temperature,
        top_k=top_k,
        stops=stops,
        pad=pad_token_id,
        generator=generator,
    )
    if all(model.shared_tokenizer):
        return _generate_shared(model, input_ids, attention_mask, **args)
    rows = []
    for b in range(input_ids.shape[0]):
        ids = input_ids[b][attention_mask[b].bool()].tolist()
        new = _generate_offsets(model, ids, **args)
        rows.append(new)
    width = max(len(r) for r in rows)
    tail = torch.full((len(rows), width), pad_token_id, dtype=input_ids.dtype)
    for b, r in enumerate(rows):
        tail[b, : len(r)] = torch.tensor(r, dtype=input_ids.dtype)
    return torch.cat([input_ids, tail], 1)


class _Decoding(TypedDict):
    """The decoding settings ``_generate_shared`` and ``_generate_offsets`` both take."""

    max_new_tokens: int
    do_sample: bool
    use_cache: bool
    temperature: float
    top_k: int | None
    stops: list[int]
    pad: int
    generator: torch.Generator | None


def _encode_prompts(tok: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    if tok is None:
        raise ValueError("prompts need the anchor tokenizer; pass input_ids instead")
    encoded = [tok(p)["input_ids"] for p in prompts]
    width = max(len(e) for e in encoded)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    ids = torch.tensor([[pad] * (width - len(e)) + list(e) for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    return ids, mask


# --------------------------------------------------------------------------- shared tokenizer


def _shared_logits(
    model: ComposedModel, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    """Last-position logits recomputed from scratch (the reference for the cached path)."""
    pos = positions_from_mask(mask)
    encoder = model.composition_config.augment_mode == "encoder"
    valid = mask.bool()
    if encoder:
        valid = valid & (torch.arange(ids.shape[1]) < prompt_len)[None]
    memories: list[Memory | None] = []
    for k in range(len(model.augments)):
        states = model.augment_states(k, ids, mask, pos)
        memories.append(model.memory(k, states, pos, valid))
    return model.anchor_forward(ids, mask, pos, memories, pos, mask.bool())[:, -1]


def _generate_shared(
    model: ComposedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    max_new_tokens: int,
    do_sample: bool,
    use_cache: bool,
    temperature: float,
    top_k: int | None,
    stops: list[int],
    pad: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    batch, prompt_len = ids.shape
    encoder = model.composition_config.augment_mode == "encoder"
    done = torch.zeros(batch, dtype=torch.bool)
    out = ids
    if max_new_tokens <= 0:
        return out
    if use_cache:
        pos = positions_from_mask(mask)
        anchor_cache = _new_cache(model.anchor)
        aug_caches = [None if encoder else _new_cache(a) for a in model.augments]
        memories: list[Memory] = []
        for k in range(len(model.augments)):
            states = model.augment_states(k, ids, mask, pos, past_key_values=aug_caches[k])
            memories.append(model.memory(k, states, pos, mask.bool()))
        logits = model.anchor_forward(ids, mask, pos, memories, pos, mask.bool(), anchor_cache)
        logits = logits[:, -1]
        last = pos[:, -1:]
    else:
        logits = _shared_logits(model, ids, mask, prompt_len)
    ones = torch.ones(batch, 1, dtype=mask.dtype)
    for n_new in range(max_new_tokens):
        nxt = pick_next(logits, do_sample, temperature, top_k, generator)
        if stops:
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            done = done | torch.isin(nxt, torch.tensor(stops))
        out = torch.cat([out, nxt[:, None]], 1)
        mask = torch.cat([mask, ones], 1)
        if bool(done.all()) or n_new == max_new_tokens - 1:
            break
        if not use_cache:
            logits = _shared_logits(model, out, mask, prompt_len)
            continue
        last = last + 1
        step_ids = nxt[:, None]
        if not encoder:
            for k in range(len(model.augments)):
                states = model.augment_states(
                    k, step_ids, mask, last, past_key_values=aug_caches[k]
                )
                memories[k] = memories[k].append(
                    model.memory(k, states, last, torch.ones_like(last, dtype=torch.bool))
                )
        logits = model.anchor_forward(
            step_ids,
            mask,
            last,
            memories,
            last,
            torch.ones_like(last, dtype=torch.bool),
            anchor_cache,
        )
        logits = logits[:, -1]
    return out


# --------------------------------------------------------------------------- own tokenizers


class _Follower:
    """One augment's view of one row: its tokens, cache and memory."""

    def __init__(self, model: ComposedModel, k: int, use_cache: bool) -> None:
        self.model, self.k = model, k
        self.tokens = Tokens(ids=[], starts=[], ends=[])
        self.cache = _new_cache(model.augments[k]) if use_cache else None
        self.memory: Memory | None = None

    def full(self, tokens: Tokens) -> Memory | None:
        """Memory for ``tokens`` computed from scratch (no cache)."""
        if not tokens.ids:
            return None
        keys, valid = offset_keys(tokens.ends, is_augment=True)
        ids = torch.tensor([tokens.ids])
        states = self.model.augment_states(
            self.k, ids, torch.ones_like(ids), torch.arange(len(tokens))[None]
        )
        return self.model.memory(self.k, states, torch.tensor([keys]), torch.tensor([valid]))

    def sync(self, tokens: Tokens) -> int:
        """Bring cache and memory to ``tokens``; returns how many old tokens were kept."""
        keep = self.tokens.common_prefix(tokens)
        if self.memory is not None and keep < self.memory.length:
            self.memory = self.memory.crop(keep)
            _crop(self.cache, keep)
        if keep < len(tokens):
            keys, valid = offset_keys(tokens.ends, is_augment=True)
            ids = torch.tensor([tokens.ids[keep:]])
            pos = torch.arange(keep, len(tokens))[None]
            states = self.model.augment_states(
                self.k, ids, torch.ones(1, len(tokens)).long(), pos, past_key_values=self.cache
            )
            mem = self.model.memory(
                self.k, states, torch.tensor([keys[keep:]]), torch.tensor([valid[keep:]])
            )
            self.memory = mem if self.memory is None or keep == 0 else self.memory.append(mem)
        self.tokens = tokens
        return keep


def _augment_tokens(
    model: ComposedModel, k: int, text: str, anchor_ids: list[int], anchor_ends: list[int]
) -> Tokens:
    """Augment k's tokens of ``text``: its own tokenisation, or the anchor's ids if shared."""
    if model.shared_tokenizer[k]:
        return Tokens(ids=list(anchor_ids), starts=[0] * len(anchor_ids), ends=list(anchor_ends))
    return encode_text(model.augment_tokenizers[k], text)


def _generate_offsets(
    model: ComposedModel,
    ids: list[int],
    *,
    max_new_tokens: int,
    do_sample: bool,
    use_cache: bool,
    temperature: float,
    top_k: int | None,
    stops: list[int],
    pad: int,
    generator: torch.Generator | None,
    forced: list[int] | None = None,
    trace: dict[str, Any] | None = None,
) -> list[int]:
    """New tokens for one unpadded row, with different-tokenizer augments.

    ``forced`` replaces the picked tokens (teacher forcing through the decoding
    path) and ``trace`` collects each step's logits and the number of augment
    roll-backs — both exist so tests can compare this path with a full forward.
    """
    tok = model.anchor_tokenizer
    encoder = model.composition_config.augment_mode == "encoder"
    ids = list(ids)
    ends = decoded_ends(tok, ids)
    prompt_text = tok.decode(ids, skip_special_tokens=True)
    followers = [_Follower(model, k, use_cache) for k in range(len(model.augments))]
    anchor_cache = _new_cache(model.anchor) if use_cache else None
    cached = 0  # anchor positions held in anchor_cache
    new: list[int] = []
    for n_new in range(max_new_tokens + 1):
        text = tok.decode(ids, skip_special_tokens=True)
        source = prompt_text if encoder else text
        floor = len(ids)  # anchor positions from here on must be (re)computed
        memories: list[Memory | None] = []
        for k, fol in enumerate(followers):
            if encoder and n_new > 0:
                memories.append(fol.memory)
                continue
            if model.shared_tokenizer[k]:
                target = _augment_tokens(model, k, source, ids, ends)
            elif n_new == 0 or not use_cache:
                target = encode_text(model.augment_tokenizers[k], source)
            else:
                target = retokenize_tail(model.augment_tokenizers[k], source, fol.tokens)
            if use_cache:
                before = len(fol.tokens)
                keep = fol.sync(target)
                if trace is not None:
                    trace["rollbacks"] = trace.get("rollbacks", 0) + int(keep < before)
                # augment positions from `keep` on are new or changed, and all of them
                # end after `cut`: anchor positions ending after `cut` must be recomputed
                cut = max(target.ends[:keep], default=-1)
                done_keys, _ = offset_keys(ends[:cached], is_augment=False)
                floor = min(floor, sum(1 for e in done_keys if e <= cut))
            else:
                fol.memory, fol.tokens = fol.full(target), target
            memories.append(fol.memory)
        if n_new == max_new_tokens:
            break
        keys, _ = offset_keys(ends, is_augment=False)
        if use_cache:
            start = min(floor, cached)
            _crop(anchor_cache, start)
            x = torch.tensor([ids[start:]])
            q = torch.tensor([keys[start:]])
            logits = model.anchor_forward(
                x,
                torch.ones(1, len(ids)).long(),
                torch.arange(start, len(ids))[None],
                memories,
                q,
                torch.ones_like(q, dtype=torch.bool),
                anchor_cache,
            )
            cached = len(ids)
        else:
            x = torch.tensor([ids])
            q = torch.tensor([keys])
            logits = model.anchor_forward(
                x,
                torch.ones_like(x),
                torch.arange(len(ids))[None],
                memories,
                q,
                torch.ones_like(q, dtype=torch.bool),
            )
        if trace is not None:
            trace.setdefault("logits", []).append(logits[0, -1])
        if forced is not None:
            if n_new >= len(forced):
                break
            nxt = int(forced[n_new])
        else:
            nxt = int(pick_next(logits[:, -1], do_sample, temperature, top_k, generator)[0])
        new.append(nxt)
        if nxt in stops:
            break
        ids.append(nxt)
        ends = decoded_ends(tok, ids, start=len(ids) - 1, prev=ends)
    return new

"""One small interface for every model the metrics score.

Metrics need three things from a model: next-token logits for a right-padded
batch, greedy continuations of a left-padded batch, and its tokenizer.  A
Hugging Face causal LM provides them one way, a CALM composition another
(``forward(input_ids, attention_mask)`` returning logits or an object with
``.logits``, ``generate(...)`` returning ids, and a ``tokenizer`` attribute).
``ScorableModel`` is that interface; ``as_scorable`` wraps either kind, so no
metric ever branches on what it scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import torch

from fusekit.errors import FusekitError
from fusekit.io.kv_cache import cache_kwargs, output_cache

# Context lengths beyond this are not used unless asked for: a 128k-token
# window on a CPU would need hundreds of GB for the logits alone.
DEFAULT_CONTEXT_CAP = 4096
FALLBACK_CONTEXT = 2048


@runtime_checkable
class ScorableModel(Protocol):
    """What the metrics need; implement it directly or let ``as_scorable`` wrap a model."""

    tokenizer: Any

    @property
    def device(self) -> torch.device: ...

    @property
    def max_context(self) -> int | None:
        """The longest input the model was built for, or ``None`` if it does not say."""

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[batch, seq, vocab]`` next-token logits of a right-padded batch, no gradients."""

    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int | list[int] | None,
        pad_token_id: int,
    ) -> torch.Tensor:
        """Greedy continuation of a left-padded batch: the new ids only, ``[batch, <=max_new]``."""


def _config_context(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Dropout off and no gradients while scoring; every submodule's mode comes back afterwards.

    Restoring module by module matters for compositions whose frozen bases stay
    in eval mode while the composition trains: ``model.train()`` would wrongly
    switch the bases' dropout back on.
    """
    modules = getattr(model, "modules", None)
    states = [(m, m.training) for m in modules()] if callable(modules) else []
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in states:
            module.training = training


def _logits_of(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"model forward returned {type(output).__name__}; expected logits or an object with .logits"
    )


def strip_prompt(generated: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The new ids of a ``generate`` result, whether or not it echoes the prompt.

    Decoder-only Hugging Face models return prompt + continuation; other
    ``generate`` implementations may return the continuation alone.
    """
    width = input_ids.shape[1]
    if generated.shape[1] >= width and torch.equal(
        generated[:, :width].to(input_ids.device), input_ids
    ):
        return generated[:, width:]
    return generated


class ModelAdapter:
    """Wraps any model with ``forward(input_ids, attention_mask)`` and ``generate(...)``."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        device = getattr(self.model, "device", None)
        if isinstance(device, torch.device):
            return device
        parameters = getattr(self.model, "parameters", None)
        if callable(parameters):
            for parameter in parameters():
                return parameter.device
        return torch.device("cpu")

    @property
    def max_context(self) -> int | None:
        explicit = getattr(self.model, "max_context", None)
        if isinstance(explicit, int) and explicit > 0:
            return explicit
        # a composition has no config of its own: its anchor's context is its context
        for owner in (self.model, getattr(self.model, "anchor", None)):
            found = _config_context(getattr(owner, "config", None))
            if found is not None:
                return found
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            return tok_max
        return None

    def _forward_kwargs(self) -> dict[str, Any]:
        return {}

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with _eval_mode(self.model):
            output = self.model(
                input_ids=input_ids, attention_mask=attention_mask, **self._forward_kwargs()
            )
        return _logits_of(output)

    def _generate_kwargs(self) -> dict[str, Any]:
        return {}

    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        max_new_tokens: int,
        eos_token_id: int | list[int] | None,
        pad_token_id: int,
    ) -> torch.Tensor:
        generate = getattr(self.model, "generate", None)
        if not callable(generate):
            raise FusekitError(
                f"{type(self.model).__name__} has no generate(); "
                "exact match needs a model that generates"
            )
        with _eval_mode(self.model):
            out = generate(
                input_ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                attention_mask=attention_mask,
                eos_token_id=eos_token_id,
                pad_token_id=pad_token_id,
                **self._generate_kwargs(),
            )
        if not isinstance(out, torch.Tensor):
            out = getattr(out, "sequences", out)
        return strip_prompt(torch.as_tensor(out), input_ids)

    def stop_ids(self) -> list[int]:
        """Ids that end a generation: the tokenizer's EOS, and any more the model's config names."""
        ids: list[int] = []
        candidates: list[Any] = [getattr(self.tokenizer, "eos_token_id", None)]
        generation_config = getattr(self.model, "generation_config", None)
        candidates.append(getattr(generation_config, "eos_token_id", None))
        for candidate in candidates:
            values = candidate if isinstance(candidate, (list, tuple)) else [candidate]
            ids.extend(int(v) for v in values if v is not None and int(v) not in ids)
        return ids

    def cached_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefill: int
    ) -> torch.Tensor:
        """Logits computed through the KV cache: ``prefill`` tokens at once, then one at a time.

        Needs a forward that takes a KV cache (``cache``, or ``past_key_values`` before
        transformers renamed it) and returns it (every Hugging Face causal LM does).
        """
        pieces: list[torch.Tensor] = []
        with _eval_mode(self.model):
            out = self.model(
                input_ids=input_ids[:, :prefill],
                attention_mask=attention_mask[:, :prefill],
                use_cache=True,
            )
            past = output_cache(out)
            if past is None:
                raise TypeError(f"{type(self.model).__name__} returned no KV cache")
            pieces.append(_logits_of(out))
            for t in range(prefill, input_ids.shape[1]):
                out = self.model(
                    input_ids=input_ids[:, t : t + 1],
                    attention_mask=attention_mask[:, : t + 1],
                    **cache_kwargs(self.model, past),
                )
                past = output_cache(out)
                pieces.append(_logits_of(out))
        return torch.cat(pieces, dim=1)


class HFModelAdapter(ModelAdapter):
    """A ``transformers`` causal LM: no cache during scoring, plain greedy search in generation."""

    def _forward_kwargs(self) -> dict[str, Any]:
        return {"use_cache": False}

    def _generate_kwargs(self) -> dict[str, Any]:
        # A checkpoint's generation_config may ask for beams; exact-match is greedy.
        return {"num_beams": 1}


def as_scorable(model: Any, tokenizer: Any = None, *, require_tokenizer: bool = True) -> Any:
    """Wrap ``model`` for the metrics; ``tokenizer`` defaults to ``model.tokenizer``.

    A composition's ``anchor_tokenizer`` also serves.  Returns a
    ``ScorableModel``; an object that already implements it is returned as is
    (with ``tokenizer`` attached if given).  Comparisons on token ids alone
    (function preservation) pass ``require_tokenizer=False``.
    """
    if isinstance(model, ModelAdapter) or (
        callable(getattr(model, "logits", None))
        and callable(getattr(model, "generate_greedy", None))
    ):
        if tokenizer is not None:
            model.tokenizer = tokenizer
        return model
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        tokenizer = getattr(model, "anchor_tokenizer", None)
    if tokenizer is None and require_tokenizer:
        raise FusekitError(
            f"no tokenizer for {type(model).__name__}: "
            "pass tokenizer=... or give the model a .tokenizer"
        )
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return HFModelAdapter(model, tokenizer)
    return ModelAdapter(model, tokenizer)


def resolve_max_length(model: ScorableModel, max_length: int | None) -> int:
    """The window length: ``max_length`` if given, else the model's context (capped)."""
    if max_length is not None:
        if max_length < 2:
            raise FusekitError(f"max_length must be at least 2, got {max_length}")
        return int(max_length)
    context = model.max_context
    if context is None:
        return FALLBACK_CONTEXT
    return min(int(context), DEFAULT_CONTEXT_CAP)


def pad_id(tokenizer: Any) -> int:
    """The id used to fill padding: pad, else EOS, else 0 (masked out either way)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def pad_batch(
    sequences: Sequence[Sequence[int]], pad: int, *, left: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, padded right (scoring) or left (generation)."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        values = torch.tensor(list(seq), dtype=torch.long)
        if left:
            ids[row, width - len(seq) :] = values
            mask[row, width - len(seq) :] = 1
        else:
            ids[row, : len(seq)] = values
            mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)

"""The composed model: frozen, unmodified bases with Θ_C hooked in between them.

No model surgery: the anchor and augment models are ordinary HF causal LMs.
Forward hooks on their decoder blocks read the augment's residual stream and
add the cross-attention result into the anchor's stream; outside a composed
call the hooks do nothing, so ``composed.anchor(...)`` is still the plain anchor.
Θ_C itself lives in ``composition``; its shape in ``config``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from fusekit.errors import PlanError
from fusekit.io.kv_cache import cache_kwargs
from fusekit.strategies.calm.composition import Composition, CrossBlock, Memory, RMSNorm
from fusekit.strategies.calm.config import AUGMENT_MODES, AugmentLink, CompositionConfig
from fusekit.strategies.calm.layers import EMBED, config_facts, decoder_layers
from fusekit.strategies.calm.masks import cross_mask
from fusekit.training.columns import causal_lm_loss, kept_columns_loss, scored_columns

__all__ = [
    "AUGMENT_MODES",
    "AugmentLink",
    "ComposedModel",
    "Composition",
    "CompositionConfig",
    "CrossBlock",
    "Memory",
    "RMSNorm",
]


class _StopAugment(Exception):
    """Raised by the capture hook after the deepest needed augment layer: skips the rest."""


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class ComposedModel(nn.Module):
    """A frozen anchor, frozen augment model(s) and the trainable composition Θ_C.

    ``shared_tokenizer[k]`` says whether augment k reads the anchor's token ids
    (keys are positions) or tokenises the text itself (keys are character ends,
    see ``masks``).  Bases stay in eval mode and ``requires_grad=False`` whatever
    ``.train()`` is called with.
    """

    #: Set by the builders and loaders only: the anchor's folder under ``"anchor"``,
    #: the augments' under ``"augments"`` (``save`` records them).
    base_paths: dict[str, Path | list[Path]]

    def __init__(
        self,
        anchor: nn.Module,
        augments: list[nn.Module],
        config: CompositionConfig,
        composition: Composition | None = None,
        *,
        anchor_tokenizer: Any = None,
        augment_tokenizers: list[Any] | None = None,
        shared_tokenizer: list[bool] | None = None,
    ) -> None:
        super().__init__()
        if len(augments) != len(config.augments):
            raise PlanError(
                f"{len(augments)} augment models but the composition describes "
                f"{len(config.augments)}"
            )
        self.anchor = anchor
        self.augments = nn.ModuleList(augments)
        self.composition_config = config
        self.composition = composition if composition is not None else Composition(config)
        self.anchor_tokenizer = anchor_tokenizer
        self.augment_tokenizers = list(augment_tokenizers or [None] * len(augments))
        self.shared_tokenizer = list(shared_tokenizer or [True] * len(augments))
        for base in [anchor, *augments]:
            base.requires_grad_(False)
            base.eval()
        self._check_widths()
        self._capture: dict[tuple[int, int], torch.Tensor] | None = None
        self._capture_stop: tuple[int, int] | None = None
        self._inject: dict[int, list[tuple[CrossBlock, torch.Tensor, torch.Tensor, torch.Tensor]]]
        self._inject = {}
        self._handles: list[Any] = []
        self._checkpoint: Callable[..., Any] | None = None
        self._install_hooks()

    # ------------------------------------------------------------------ set-up

    def _check_widths(self) -> None:
        facts = config_facts(self.anchor.config)
        if facts["hidden_size"] != self.composition_config.anchor_hidden_size:
            raise PlanError(
                f"the anchor is {facts['hidden_size']} wide but the composition was built for "
                f"{self.composition_config.anchor_hidden_size}"
            )
        for k, (model, link) in enumerate(
            zip(self.augments, self.composition_config.augments, strict=True)
        ):
            width = config_facts(model.config)["hidden_size"]
            if width != link.hidden_size:
                raise PlanError(
                    f"augment {k} is {width} wide but the composition was built for "
                    f"{link.hidden_size}"
                )

    def _install_hooks(self) -> None:
        anchor_blocks = decoder_layers(self.anchor)
        anchor_layers = sorted({j for a in self.composition_config.augments for _, j in a.pairs})
        for j in anchor_layers:
            if j == EMBED:
                self._handles.append(
                    anchor_blocks[0].register_forward_pre_hook(
                        self._make_inject_pre(j), with_kwargs=True
                    )
                )
            else:
                self._handles.append(anchor_blocks[j].register_forward_hook(self._make_inject(j)))
        for k, (model, link) in enumerate(
            zip(self.augments, self.composition_config.augments, strict=True)
        ):
            blocks = decoder_layers(model)
            for i in sorted({i for i, _ in link.pairs}):
                if i == EMBED:
                    self._handles.append(
                        blocks[0].register_forward_pre_hook(
                            self._make_capture_pre(k, i), with_kwargs=True
                        )
                    )
                else:
                    self._handles.append(blocks[i].register_forward_hook(self._make_capture(k, i)))

    def _store(self, k: int, i: int, h: torch.Tensor) -> None:
        if self._capture is None:
            return
        self._capture[(k, i)] = h
        if self._capture_stop == (k, i):
            raise _StopAugment

    def _make_capture(self, k: int, i: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._store(k, i, _first(output))

        return hook

    def _make_capture_pre(self, k: int, i: int) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            self._store(k, i, args[0] if args else kwargs["hidden_states"])

        return hook

    def _delta(self, j: int, h: torch.Tensor) -> torch.Tensor | None:
        entries = self._inject.get(j)
        if not entries:
            return None
        total = h
        checkpoint = self._recompute_with()
        for block, k, v, visible in entries:
            if checkpoint is not None:
                total = total + checkpoint(block, h, k, v, visible)
            else:
                total = total + block(h, k, v, visible)
        return total

    def _make_inject(self, j: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            h = _first(output)
            new = self._delta(j, h)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    def _make_inject_pre(self, j: int) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> Any:
            h = args[0] if args else kwargs["hidden_states"]
            new = self._delta(j, h)
            if new is None:
                return None
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return hook

    def remove_hooks(self) -> None:
        """Detach from the bases (they are plain models again)."""
        self.activation_checkpointing_disable()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # ------------------------------------------------------------------ checkpointing

    def activation_checkpointing_enable(
        self,
        activation_checkpointing_kwargs: dict[str, Any] | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """Recompute the anchor's decoder blocks and the cross-attention blocks in backward.

        ``Trainer`` calls this under ``train.gradient_checkpointing``.  The anchor stays
        in eval mode (its dropout off), which leaves transformers' own per-layer
        checkpointing inactive, so each anchor block's ``forward`` is wrapped here
        instead.  The injection hooks run outside that wrapper and every cross-attention
        block is checkpointed on its own, with its inputs passed explicitly: a
        recomputation never reads ``_inject``, which is empty again by then.
        Checkpointing is non-reentrant: the frozen blocks' inputs need no gradient, and
        reentrant checkpointing would answer that with none for Θ_C either.  The augments
        run without gradients and keep nothing to recompute.
        """
        from torch.utils.checkpoint import checkpoint

        if every_n_layers != 1 or offload:
            raise PlanError(
                "CALM checkpoints every anchor block, on the device; "
                "every_n_layers and offload are not supported"
            )
        options = {"use_reentrant": False, **(activation_checkpointing_kwargs or {})}
        self._checkpoint = functools.partial(checkpoint, **options)
        for block in decoder_layers(self.anchor):
            if "forward" not in vars(block):  # an instance attribute, ahead of the class's
                vars(block)["forward"] = self._recomputed(block.forward)

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None, **options: Any
    ) -> None:
        """The name ``Trainer`` calls before transformers 5 (see the method above)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **options)

    def activation_checkpointing_disable(self) -> None:
        """Keep activations again; the anchor's blocks get their own ``forward`` back."""
        self._checkpoint = None
        for block in decoder_layers(self.anchor):
            vars(block).pop("forward", None)

    def _recompute_with(self) -> Callable[..., Any] | None:
        """The checkpoint function if this forward checkpoints (enabled, training, with
        gradients recorded), else None: evaluation and generation run as they are."""
        if self.training and torch.is_grad_enabled():
            return self._checkpoint
        return None

    def _recomputed(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            checkpoint = self._recompute_with()
            if checkpoint is not None:
                return checkpoint(forward, *args, **kwargs)
            return forward(*args, **kwargs)

        return run

    def train(self, mode: bool = True) -> ComposedModel:
        super().train(mode)
        self.anchor.eval()
        for model in self.augments:
            model.eval()
        return self

    @property
    def tokenizer(self) -> Any:
        """The anchor's tokenizer: prompts and outputs are anchor tokens."""
        return self.anchor_tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.composition.parameters()).device

    # ------------------------------------------------------------------ pieces

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.composition.parameters())

    def parameter_report(self) -> dict[str, Any]:
        """Θ_C's size and its share of the anchor (the paper's "budget")."""
        theta = self.composition.num_parameters()
        anchor = sum(p.numel() for p in self.anchor.parameters())
        return {
            "composition_parameters": theta,
            "anchor_parameters": anchor,
            "share_of_anchor": theta / anchor if anchor else float("nan"),
        }

    @torch.no_grad()
    def augment_states(
        self,
        k: int,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Any = None,
    ) -> dict[int, torch.Tensor]:
        """Augment k's residual streams at its paired layers (no gradients, ever)."""
        layers = sorted({i for i, _ in self.composition_config.augments[k].pairs})
        self._capture = {}
        # stop after the deepest needed layer unless a cache must stay complete
        self._capture_stop = (k, layers[-1]) if past_key_values is None else None
        try:
            self.augments[k](
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **cache_kwargs(self.augments[k], past_key_values),
            )
        except _StopAugment:
            pass
        finally:
            captured, self._capture, self._capture_stop = self._capture, None, None
        return {i: captured[(k, i)] for i in layers}

    def memory(
        self, k: int, states: dict[int, torch.Tensor], keys: torch.Tensor, valid: torch.Tensor
    ) -> Memory:
        """Project augment k's states into per-pair keys/values (gradients flow into Θ_C)."""
        pairs = self.composition_config.augments[k].pairs
        kv = [
            block.memory(states[i])
            for block, (i, _) in zip(self.composition.pair_blocks(k), pairs, strict=True)
        ]
        return Memory(kv=kv, keys=keys, valid=valid.bool())

    def anchor_forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        memories: Sequence[Memory | None],
        q_keys: torch.Tensor,
        q_valid: torch.Tensor,
        past_key_values: Any = None,
        logits_to_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Anchor logits with every pair's cross-attention injected; ``None`` memory = skip.
        ``logits_to_keep`` (positions) runs the output layer there only."""
        inject: dict[int, list[Any]] = {}
        kind = self.composition_config.mask
        for k, mem in enumerate(memories):
            if mem is None:
                continue
            visible = cross_mask(q_keys, q_valid, mem.keys, mem.valid, kind)
            pairs = self.composition_config.augments[k].pairs
            for block, (_, j), (kk, vv) in zip(
                self.composition.pair_blocks(k), pairs, mem.kv, strict=True
            ):
                inject.setdefault(j, []).append((block, kk, vv, visible))
        self._inject = inject
        try:
            out = self.anchor(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                **cache_kwargs(self.anchor, past_key_values),
                **({} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}),
            )
        finally:
            self._inject = {}
        return out.logits

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        anchor_keys: torch.Tensor | None = None,
        augment_inputs: Sequence[dict[str, torch.Tensor] | None] | None = None,
        prompt_chars: torch.Tensor | None = None,
        loss_only: bool = False,
        **unused: Any,
    ) -> CausalLMOutputWithPast:
        """Teacher-forced composed forward; ``loss`` when ``labels`` are given.

        Returns a ``CausalLMOutputWithPast`` like any transformers causal LM, so
        ``out.logits`` and ``out["logits"]`` both work.  ``loss_only`` (training) runs the
        anchor's output layer only at the positions whose next token is labelled and
        returns no logits: with a large vocabulary (Gemma-3's 262k) that layer is most of
        the step, and on answers or assistant turns most positions are not scored.  The
        loss is the same mean over the same tokens.

        ``augment_inputs[k]`` (different-tokenizer augments only) holds that
        model's own ``input_ids``, ``attention_mask`` and character-end ``keys``/
        ``valid``; ``anchor_keys`` then holds the anchor's character ends.
        """
        from fusekit.strategies.calm.masks import positions_from_mask, prompt_mask_from_labels

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        positions = positions_from_mask(attention_mask)
        encoder = self.composition_config.augment_mode == "encoder"
        if augment_inputs is None and not all(self.shared_tokenizer):
            from fusekit.strategies.calm.collate import offsets_inputs_from_ids

            anchor_keys, augment_inputs = offsets_inputs_from_ids(
                self.anchor_tokenizer,
                self.augment_tokenizers,
                self.shared_tokenizer,
                input_ids,
                attention_mask,
            )
        memories: list[Memory | None] = []
        for k in range(len(self.augments)):
            extra = augment_inputs[k] if augment_inputs is not None else None
            if extra is None:
                ids, mask, pos = input_ids, attention_mask, positions
                keys, valid = positions, attention_mask.bool()
                if encoder:
                    if labels is None:
                        raise PlanError("augment_mode 'encoder' needs prompt/completion examples")
                    valid = valid & prompt_mask_from_labels(labels, attention_mask)
            else:
                ids, mask = extra["input_ids"], extra["attention_mask"]
                pos = positions_from_mask(mask)
                keys, valid = extra["keys"], extra["valid"].bool() & mask.bool()
                if encoder:
                    if prompt_chars is None:
                        raise PlanError("augment_mode 'encoder' needs prompt/completion examples")
                    valid = valid & (keys <= prompt_chars[:, None])
            states = self.augment_states(k, ids, mask, pos)
            memories.append(self.memory(k, states, keys, valid))
        q_keys = anchor_keys if anchor_keys is not None else positions
        keep = scored_columns(labels) if loss_only and labels is not None else None
        logits = self.anchor_forward(
            input_ids, attention_mask, positions, memories, q_keys, attention_mask.bool(),
            logits_to_keep=keep,
        )  # fmt: skip
        if keep is not None:
            assert labels is not None
            loss = kept_columns_loss(logits, labels, keep)
            return CausalLMOutputWithPast(loss=loss, logits=None)
        full = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=full, logits=logits)

    def generate(self, input_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Iterative decoding with separate caches; see ``generation.generate``."""
        from fusekit.strategies.calm.generation import generate

        return generate(self, input_ids, **kwargs)

"""How a token sequence longer than the model's context is cut into forward passes.

A sequence of ``n`` token ids is scored on its *targets*: the positions
``first_target .. n-1`` (position 0 is never a target — it has nothing before
it to be predicted from).  A model of context ``max_length`` sees at most
``max_length`` tokens per forward pass, so long sequences are scored in windows:

* the first window is ``ids[0:e]`` with ``e = min(n, max(max_length, first_target + stride))``
  and scores every target in it (the window may start later than 0 when the
  unscored context alone is longer than the model's context: then its oldest
  tokens are dropped);
* every later window scores the next ``stride`` targets and ends on the last of
  them; it starts ``max_length`` tokens before its end, so each of its targets
  sees ``max_length - stride`` tokens or more of earlier context.

``stride = max_length - 1`` (the default) gives disjoint windows that overlap
by one token — the one that conditions the window's first target.  That is
the cheapest exact-once scoring and what lm-evaluation-harness's rolling
log-likelihood does; a smaller stride buys every target more context at the
price of more forward passes (the "sliding window" perplexity of the
transformers docs).  Either way every target is scored exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One forward pass: tokens ``ids[begin:end]``, scoring targets ``score_from .. end-1``."""

    begin: int
    end: int
    score_from: int

    @property
    def n_targets(self) -> int:
        return self.end - self.score_from


def default_stride(max_length: int) -> int:
    """Disjoint windows: each later window repeats one token of context."""
    return max_length - 1


def plan_windows(
    n_tokens: int, first_target: int, max_length: int, stride: int | None = None
) -> list[Window]:
    """Cut ``n_tokens`` ids into windows that score each of ``first_target .. n_tokens-1`` once.

    Returns ``[]`` when there is nothing to score (``n_tokens <= first_target``).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    stride = default_stride(max_length) if stride is None else stride
    if not 1 <= stride <= max_length - 1:
        raise ValueError(
            f"stride must be between 1 and max_length - 1 = {max_length - 1}, got {stride}"
        )
    start = max(first_target, 1)
    if n_tokens <= start:
        return []
    end = min(n_tokens, max(max_length, start + stride))
    windows = [Window(begin=max(0, end - max_length), end=end, score_from=start)]
    while end < n_tokens:
        new_end = min(n_tokens, end + stride)
        windows.append(Window(begin=max(0, new_end - max_length), end=new_end, score_from=end))
        end = new_end
    return windows

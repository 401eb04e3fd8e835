"""Held-out scores while a model trains (``train.eval_steps``): the curve, not just its end.

Some claims are about *when*: a depth-up-scaled model heals its splice over
continued training and may or may not overtake the base continued alike; a
learning rate may help early and hurt late.  One score after the last step cannot
say which.  Every ``eval_steps`` optimizer steps, and once before the first, the
recipe's eval sets are scored on the model being trained, in place (no copy, no
save), with the same metrics ``fusekit eval`` uses on the saved output (the
pipeline passes the scorer in: training does not import evaluation).

Two properties make the curve safe to switch on:

* **Training is unchanged.** Scoring runs without gradients, with dropout off
  (every submodule's mode is restored afterwards, see
  ``fusekit.evaluation.adapters``), and inside ``torch.random.fork_rng``, so no
  random number the training would draw is consumed: the weights after N steps
  are the same with and without a curve (tested).
* **Resumes keep the points already measured.** Each point is a row of the
  Trainer's ``log_history`` (``{"step": s, "heldout": {set: score}}``), which every
  checkpoint stores, so a run resumed at step 60 reports the points of steps 0–60
  it measured before the crash and does not measure them again.

Scoring needs the whole model in one process, so a curve is refused for runs of
several processes (``fusekit.pipeline.distributed.check_sharding``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fusekit import log

#: The ``log_history`` key of a curve point.
HELDOUT = "heldout"

#: Scores a model in place: ``{set label: score}``.
Scorer = Callable[[Any], dict[str, float]]


def curve_points(history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curve in a Trainer's ``log_history``: ``[{"step": s, set: score, …}, …]``."""
    return [{"step": int(row["step"]), **row[HELDOUT]} for row in history if HELDOUT in row]


def curve_callback(score: Scorer, every: int, label: str) -> Any:
    """A ``TrainerCallback`` calling ``score`` on the training model at step 0, every
    ``every`` steps and at the last, appending each point to the Trainer's ``log_history``."""
    import torch
    from transformers import TrainerCallback

    class HeldOutCurve(TrainerCallback):
        def _measure(self, state: Any, model: Any) -> None:
            with torch.random.fork_rng():
                point = score(model)
            state.log_history.append({"step": state.global_step, HELDOUT: point})
            shown = "  ".join(f"{name} {value:.4f}" for name, value in point.items())
            log.info(f"fusekit: [{label}] held-out at step {state.global_step}: {shown}")

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 0 and state.is_world_process_zero:
                self._measure(state, kwargs["model"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step
            if (step % every == 0 or step == state.max_steps) and state.is_world_process_zero:
                self._measure(state, kwargs["model"])

    return HeldOutCurve()

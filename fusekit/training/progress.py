"""Training progress as one labelled line per log step.

The Trainer's own display is a tqdm bar plus its logs printed as raw dicts
(``{'loss': '0.3938', 'grad_norm': …}``). When several models train side by side
(from-scratch bases in worker processes sharing one terminal) the bars and dicts
of different models interleave, unlabelled. A whole line per report, naming the
model, stays readable when processes share stderr and reads the same in a log
file; the numbers themselves also go to ``train_log.jsonl``.
"""

from __future__ import annotations

import time
from typing import Any

from fusekit import log


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(label: str, step: int, total: int, logs: dict[str, Any], elapsed: float,
                  done_here: int) -> str:  # fmt: skip
    """``fusekit: [calm] step 150/1500 (10%)  loss 0.3938  grad_norm 1.21  lr 2.00e-03  …``."""
    parts = [f"fusekit: [{label}] step {step}/{total} ({100 * step // max(total, 1)}%)"]
    for key, fmt in (("loss", ".4f"), ("grad_norm", ".3g"), ("learning_rate", ".2e")):
        if key in logs:
            name = "lr" if key == "learning_rate" else key
            parts.append(f"{name} {format(float(logs[key]), fmt)}")
    timing = f"{_duration(elapsed)} elapsed"
    if done_here > 0 and step < total:
        timing += f", ~{_duration(elapsed / done_here * (total - step))} left"
    parts.append(timing)
    return "  ".join(parts)


def progress_callback(label: str) -> Any:
    """A ``TrainerCallback`` that logs ``progress_line``s (rank 0 only) and the end."""
    from transformers import TrainerCallback

    class ProgressLines(TrainerCallback):
        def __init__(self) -> None:
            self.clock = time.perf_counter()
            self.first_step = 0
            self.shown: tuple[int, float] | None = None  # (step, time) of the last line

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.clock = time.perf_counter()
            self.first_step = state.global_step  # a resumed run starts past 0
            self.shown = None

        def _due(self, step: int, total: int, now: float) -> bool:
            """The first and last report, then one per 5 % of the run or per 30 s: a
            1500-step run logging every 10 steps prints ~20 lines, not 150."""
            if self.shown is None or step >= total:
                return True
            last_step, last_time = self.shown
            return step - last_step >= total / 20 or now - last_time >= 30

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            now = time.perf_counter()
            elapsed = now - self.clock
            step, total = state.global_step, state.max_steps
            if "loss" in logs and self._due(step, total, now):
                self.shown = (step, now)
                done = step - self.first_step
                log.info(progress_line(label, step, total, logs, elapsed, done))
            elif "train_runtime" in logs:
                log.info(
                    f"fusekit: [{label}] trained {state.global_step} steps in {_duration(elapsed)}"
                )

    return ProgressLines()

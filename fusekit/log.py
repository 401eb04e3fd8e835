"""fusekit's messages: one ``fusekit`` logger on stderr, its level from the CLI or env.

Every progress and status line fusekit prints goes through ``logger()`` so that
``fusekit -q`` (warnings and errors only) and ``--log-level`` reach all of them,
including worker processes that train from-scratch bases side by side: the level
travels in ``FUSEKIT_LOG_LEVEL``, which spawned workers inherit. As in
transformers, the library installs its own stderr handler on first use (plain
``%(message)s``), so Python API users see progress without configuring logging,
and the logger does not propagate to the root logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

ENV = "FUSEKIT_LOG_LEVEL"
LEVELS = ("debug", "info", "warning", "error")
_NAME = "fusekit"


def _level_from_env() -> int:
    name = os.environ.get(ENV, "info").strip().lower()
    return getattr(logging, name.upper()) if name in LEVELS else logging.INFO


class _Stderr(logging.Handler):
    """Writes each message as one line to whatever ``sys.stderr`` is now (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # logging's contract: report, never raise
            self.handleError(record)


def logger() -> logging.Logger:
    """The ``fusekit`` logger, with its stderr handler and the environment's level."""
    log = logging.getLogger(_NAME)
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(_level_from_env())
    return log


def set_level(name: str) -> None:
    """Set the level here and for worker processes started from now on."""
    os.environ[ENV] = name
    logger()
    if name in ("warning", "error"):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def library_bars_off() -> None:
    """Turn off transformers' per-file bars ("Loading weights", "Writing model shards").

    A run saves a checkpoint every tenth of its steps and loads several models, so
    those bars outnumber fusekit's own lines; fusekit's commands and workers switch
    them off, and API users who want them keep transformers' default.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def info(message: str) -> None:
    logger().info(message)


def warning(message: str) -> None:
    logger().warning(message)


def bars_disabled() -> bool | None:
    """``disable=`` for tqdm bars: off when quiet, else tqdm's own choice (off without a TTY)."""
    return True if logger().getEffectiveLevel() > logging.INFO else None


@contextlib.contextmanager
def peft_deprecations_off() -> Iterator[None]:
    """Around ``get_peft_model``: peft reads ``is_gradient_checkpointing``, which
    transformers 5 deprecated, and every LoRA run would print that FutureWarning to a
    user who can do nothing about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning
        )
        yield

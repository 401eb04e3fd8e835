"""Errors fusekit raises on purpose.

Every ``FusekitError`` is the user's problem, not fusekit's: the CLI prints it as a
single ``fusekit: error: …`` line and exits with status 2, with no traceback.
Anything else that escapes is a fault of fusekit (exit 1).  Messages should name
the file or field at fault and say what to do instead.
"""

from __future__ import annotations


def listing(items: list[str], most: int = 3) -> str:
    """``a, b, c and 4 more``: names for a one-line message that stays one line."""
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


class FusekitError(Exception):
    """Base class: a problem with the user's input that they can fix."""

    exit_code = 2

    def lines(self) -> list[str]:
        """One line per problem; most errors carry exactly one."""
        return [str(self)]

    def replace_path(self, old: str, new: str) -> None:
        """Say ``new`` where the message says ``old``: a run's temporary folder is gone by
        the time the user reads the line, so messages name the output instead."""
        self.args = tuple(a.replace(old, new) if isinstance(a, str) else a for a in self.args)


class RecipeError(FusekitError):
    """A recipe (YAML or ``--set`` override) is invalid.

    Carries one message per problem so ``fusekit validate`` can list them all.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))

    def lines(self) -> list[str]:
        return list(self.problems)

    def replace_path(self, old: str, new: str) -> None:
        self.problems = [p.replace(old, new) for p in self.problems]
        super().replace_path(old, new)


class ModelIOError(FusekitError):
    """A model folder is missing, incomplete, pickled, or otherwise unreadable."""


class UnsupportedArchitectureError(FusekitError):
    """fusekit has no facts for this architecture, or the operation cannot be exact on it."""


class PlanError(FusekitError):
    """A surgery or composition plan does not fit the model(s) it names."""


class DataError(FusekitError):
    """A data file or built-in task spec cannot be read or is empty."""


class NonFiniteLossError(FusekitError):
    """Training produced a NaN or infinite loss."""


class OutputExistsError(FusekitError):
    """The output folder exists and ``--overwrite`` was not given, or it would touch an input."""


class NotImplementedStrategyError(FusekitError):
    """The strategy exists in the contract but is not built yet."""

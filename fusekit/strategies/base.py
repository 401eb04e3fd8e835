"""The interface every strategy implements.

A strategy turns a validated recipe into an output folder.  ``fusekit.api.run``
owns everything around it — resolving from-scratch models, the atomic output
folder, provenance and the model card — so a strategy only has to:

* ``plan()``: describe what it will do without touching weights (``--dry-run``);
* ``run(workdir)``: write its output into ``workdir`` (a temporary folder that
  is renamed into place only if ``run`` returns) and return a JSON-able summary.

Surgery-only strategies keep ``run`` short: build, then hand the folder to the
shared trainer when the recipe has a ``train`` section.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


class Strategy(ABC):
    """Base class; subclasses set ``tag`` and implement ``plan`` and ``run``."""

    tag: ClassVar[str]

    def __init__(self, recipe: Any) -> None:
        self.recipe = recipe
        # Set by ``fusekit.api.run`` to a folder beside the output that survives a crash,
        # so ``--resume`` finds the checkpoints; removed once the output is complete.
        self.checkpoint_dir: Path | None = None

    def checkpoints(self, workdir: Path) -> Path:
        """Where training checkpoints go: the stable folder, else inside ``workdir``."""
        return self.checkpoint_dir or Path(workdir) / ".checkpoints"

    @abstractmethod
    def plan(self) -> dict[str, Any]:
        """What will be built: layers, parameter counts, memory/disk estimates. Reads no weights."""

    @abstractmethod
    def run(self, workdir: Path) -> dict[str, Any]:
        """Build (and train) into ``workdir``; return a summary that goes into ``fusekit.json``."""

    def input_paths(self) -> list[Path]:
        """Local folders this strategy reads; the output may never be inside one of them."""
        return []

"""Which parameters train after block expansion: the new layers only.

LLaMA Pro post-trains only the inserted blocks; embeddings, head and original
blocks stay frozen, which is what limits forgetting.  The new layer indices are
recorded in the output's ``fusekit.json`` (``trainable_layers``) so training can
be resumed or repeated from the folder alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fusekit.errors import ModelIOError
from fusekit.io.arch import ArchFacts, arch_facts
from fusekit.io.provenance import read_provenance


def trainable_layers(folder: str | Path) -> list[int]:
    """The new-layer indices recorded in ``folder/fusekit.json``."""
    record = read_provenance(folder)
    if record is None:
        raise ModelIOError(f"{folder} has no fusekit.json; it is not a block-expansion output")
    layers = record.get("trainable_layers")
    if layers is None:
        layers = (record.get("details") or {}).get("trainable_layers")
    if layers is None:
        raise ModelIOError(f"{folder}/fusekit.json lists no trainable_layers")
    return [int(i) for i in layers]


def new_layer_param_filter(
    folder_or_indices: str | Path | Iterable[int], facts: ArchFacts | Any = None
) -> Callable[[str], bool]:
    """A predicate on parameter names: True for parameters of the new layers.

    Works on names of a loaded model, wrapped or not (``model.layers.4.mlp...``,
    ``base_model.model.model.layers.4...``).  ``facts`` may be ``ArchFacts``, a
    config, or None to read the folder's ``config.json``.
    """
    if isinstance(folder_or_indices, (str, Path)):
        folder = Path(folder_or_indices)
        indices = set(trainable_layers(folder))
        if facts is None:
            facts = json.loads((folder / "config.json").read_text())
    else:
        indices = {int(i) for i in folder_or_indices}
        if facts is None:
            raise ValueError("give the architecture facts (or a config) with explicit indices")
    facts = arch_facts(facts)

    def is_new(name: str) -> bool:
        parsed = facts.layer_index(name, anywhere=True)
        return parsed is not None and parsed[0] in indices

    return is_new

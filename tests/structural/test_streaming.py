"""Streamed surgery never imports torch or transformers when it only copies and zeroes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fusekit.strategies.block_expansion.plan import expansion_plan
    from fusekit.strategies.block_expansion.surgery import expand
    from fusekit.strategies.depth_upscaling.plan import solar_plan
    from fusekit.strategies.depth_upscaling.splice import splice

    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    expand(src, expansion_plan(4, 2), out / "expanded", progress=False)
    splice({"m": src}, solar_plan(4, 1, "m"), out / "dus", base="m", progress=False)
    print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """
)


def test_surgery_streams_without_torch(tiny: Callable[..., Path], tmp_path: Path) -> None:
    base = tiny("gemma2")  # post-norm gains filled with -1: constants, not tensors
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(base), str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "expanded" / "model.safetensors").is_file()
    assert (tmp_path / "dus" / "config.json").is_file()

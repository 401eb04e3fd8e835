"""The CALM quick-start's claim, reproduced (``pytest -m slow``; 5-10 minutes a cell).

The claim that must survive a user's machine is qualitative: CALM beats the paper's
84.3 % exact match on KV arithmetic over keys the composition never trained on, and
the anchor keeps its arithmetic. It is checked for each composition seed at one
thread, two threads and torch's default thread count, because other thread counts
sum floats in another order and so train different bases. Each thread count has its
own base cache under ``$FUSEKIT_CACHE``, so only the first seed trains the bases.
The LoRA baseline is left out (``baselines=[]``): the claim is about the composition.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "quickstart" / "calm-kv-arithmetic.yaml"
PAPER_HELD_OUT = 0.843
HELD_OUT = "kv_arithmetic:held_out:heldout"
NUMERIC = "numeric_arithmetic:heldout"


def _default_threads() -> int:
    """torch's thread count in a fresh process without ``OMP_NUM_THREADS``."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.check_output([sys.executable, "-c", code], env=env, text=True))


def _run(threads: int | None, seed: int, tmp: Path) -> dict:
    from fusekit.io.cache import cache_root

    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env["FUSEKIT_CACHE"] = str(cache_root() / f"calm-quickstart-threads-{threads or 'default'}")
    out = tmp / "out"
    cmd = [sys.executable, "-m", "fusekit", "-q", "run", str(RECIPE), "-o", str(out),
           "--set", f"train.seed={seed}", "--set", "baselines=[]"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "fusekit.json").read_text())["details"]["eval"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threads", [1, 2, None], ids=["1-thread", "2-threads", "default"])
def test_calm_beats_the_paper_on_held_out_keys(
    threads: int | None, seed: int, tmp_path: Path
) -> None:
    if threads is None and _default_threads() in (1, 2):
        pytest.skip("torch's default thread count here is one of the explicit cells")
    scores = _run(threads, seed, tmp_path)
    assert scores[HELD_OUT]["calm"] > PAPER_HELD_OUT, scores[HELD_OUT]
    # the anchor's arithmetic is kept: within one point of the anchor alone (the paper's
    # own composition is 1.7 points below its anchor, 72.0 against 73.7)
    assert scores[NUMERIC]["calm"] >= scores[NUMERIC]["anchor"] - 0.01, scores[NUMERIC]

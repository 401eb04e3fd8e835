"""The real-model quick-starts (``recipes/real``) plan on the real checkpoints.

They name ``models/smollm2-135m`` and ``models/gemma3-270m``, the folders
``recipes/real/models.py`` writes; here those names point at the tier's converted
folders, and ``models.py`` itself is checked to find both files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
REAL = sorted((ROOT / "recipes" / "real").glob("*.yaml"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_quickstart_plans(path: Path, real: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    os.symlink(real["smollm2"], tmp_path / "models" / "smollm2-135m")
    os.symlink(real["gemma3"], tmp_path / "models" / "gemma3-270m")
    out = subprocess.run(
        [sys.executable, "-m", "fusekit", "compare", str(path), "--dry-run", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    plans = [run["plan"] for run in json.loads(out.stdout)["runs"]]
    assert plans and all(p["disk_bytes"] > 0 for p in plans)
    trained = [p for p in plans if (p.get("train") or {}).get("steps")]
    assert trained and all(p["training_memory_bytes"]["total"] > 0 for p in trained)
    assert not (tmp_path / "out").exists()


def test_models_script_finds_the_smollm2_file(gguf_files: dict[str, Path]) -> None:
    spec = importlib.util.spec_from_file_location("real_models", ROOT / "recipes/real/models.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.smollm2_file() == gguf_files["smollm2"]

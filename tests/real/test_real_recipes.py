"""The real-model quick-starts (``recipes/real``) plan on the real checkpoints.

They name ``models/smollm2-135m`` and ``models/gemma3-270m``, the folders
``recipes/real/models.py`` writes; here those names point at the tier's converted
folders, and ``models.py`` itself is run to write both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
REAL = sorted((ROOT / "recipes" / "real").glob("*.yaml"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_quickstart_plans(path: Path, real: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    os.symlink(real["smollm2"], tmp_path / "models" / "smollm2-135m")
    os.symlink(real["gemma3"], tmp_path / "models" / "gemma3-270m")
    # the data files its header says to write first ("python experiments/X.py out/real/data")
    for script in re.findall(r"python (experiments/\w+\.py) out/real/data", path.read_text()):
        subprocess.run([sys.executable, str(ROOT / script), "out/real/data"], check=True,
                       cwd=tmp_path, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    # a parent that another real recipe makes ("fusekit run recipes/real/X.yaml"): for
    # planning, the model that recipe starts from stands in for its output
    for made in re.findall(r"fusekit run (recipes/real/[\w-]+\.yaml)", path.read_text()):
        if ROOT / made == path:
            continue
        maker = yaml.safe_load((ROOT / made).read_text())
        (tmp_path / maker["output"]).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((tmp_path / maker["model"]).resolve(), tmp_path / maker["output"])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # a comparison, or one run (a recipe naming its strategy, e.g. a parent to cache)
    single = re.search(r"^strategy:", path.read_text(), re.MULTILINE) is not None
    out = subprocess.run(
        [sys.executable, "-m", "fusekit", "run" if single else "compare", str(path),
         "--dry-run", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    plans = [answer] if single else [run["plan"] for run in answer["runs"]]
    assert plans and all(p["disk_bytes"] > 0 for p in plans)
    trained = [p for p in plans if (p.get("train") or {}).get("steps")]
    assert trained and all(p["training_memory_bytes"]["total"] > 0 for p in trained)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_models_script_writes_both_folders(gguf_files: dict[str, Path], tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "recipes" / "real" / "models.py"), "--root", str(tmp_path)]
    first = subprocess.run(script, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    for name in ("smollm2-135m", "gemma3-270m"):
        assert json.loads((tmp_path / name / "config.json").read_text())["num_hidden_layers"] > 0
        assert (
            any((tmp_path / name).glob("*.safetensors"))
            and (tmp_path / name / "tokenizer.json").is_file()
        )
    again = subprocess.run(script, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and again.stdout.count("already there") == 2

"""Every strategy trains on two gloo ranks through ``fusekit run --accelerate-config``.

accelerate's MULTI_CPU type launches through mpirun; its torchrun launcher (the
MULTI_GPU type) starts CPU ranks that ``Trainer`` joins with gloo when no GPU
exists.  Each rank rebuilds its units through the strategy's ``build``; rank 0
saves; the parent writes provenance and renames the output into place.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.conftest import fusekit_cli, recipe_for, weights, write_corpus, write_recipe

DISTRIBUTED = ("finetune", "block_expansion", "depth_upscaling", "calm", "fusellm")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_cpu_ranks(path: Path) -> Path:
    path.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\n"
        "num_machines: 1\nmachine_rank: 0\nmain_process_ip: 127.0.0.1\n"
        f"main_process_port: {_free_port()}\nmixed_precision: 'no'\nuse_cpu: false\n"
    )
    return path


@pytest.mark.parametrize("strategy", DISTRIBUTED)
def test_two_gloo_ranks_write_one_complete_output(
    strategy: str, models: dict[str, Path], tmp_path: Path
) -> None:
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate launcher not on PATH")
    data = write_corpus(tmp_path / "corpus.jsonl")
    recipe = recipe_for(strategy, models, data)
    recipe["train"]["steps"] = 2
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    out = tmp_path / "out"
    config = two_cpu_ranks(tmp_path / "two_cpu_ranks.yaml")
    proc = fusekit_cli("run", str(path), "-o", str(out), "--accelerate-config", str(config))
    assert proc.returncode == 0, proc.stderr[-12000:]
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["world_size"] == 2 and record["training"]["steps"] == 2
    assert weights(out) and (out / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    # trained: the output's tensors differ from an untrained build of the same recipe
    recipe["train"]["steps"] = 0
    zero = write_recipe(tmp_path / "zero.yaml", recipe)
    assert fusekit_cli("run", str(zero), "-o", str(tmp_path / "zero")).returncode == 0
    before, after = weights(tmp_path / "zero"), weights(out)
    assert before.keys() == after.keys()
    assert any(not bool((before[k] == after[k]).all()) for k in before)


def test_a_missing_accelerate_config_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "corpus.jsonl")
    path = write_recipe(tmp_path / "recipe.yaml", recipe_for("finetune", models, data))
    out = tmp_path / "out"
    proc = fusekit_cli("run", str(path), "-o", str(out), "--accelerate-config", "nope.yaml")
    assert proc.returncode == 2 and "nope.yaml does not exist" in proc.stderr
    assert not out.exists()


def test_two_ranks_tokenise_the_data_once_and_a_second_run_not_at_all(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """Rank 0 builds first and writes the Arrow cache; rank 1, and every later run, read it."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate launcher not on PATH")
    data = write_corpus(tmp_path / "corpus.jsonl", seed=11)
    recipe = recipe_for("finetune", models, data)
    recipe["train"]["steps"] = 2
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    config = two_cpu_ranks(tmp_path / "two_cpu_ranks.yaml")
    env = {**os.environ, "FUSEKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    runs = []
    for out in ("one", "two"):
        proc = subprocess.run(
            [sys.executable, "-m", "fusekit", "run", str(path), "-o", str(tmp_path / out),
             "--accelerate-config", str(config)],
            capture_output=True, text=True, env=env, timeout=600, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-6000:]
        runs.append(proc.stderr)
    first, second = runs
    assert first.count("tokenising 64 records") == 1
    assert first.count("tokenised examples read from the cache") == 1
    assert "tokenising" not in second and second.count("read from the cache") == 2
    assert len(list((tmp_path / "cache" / "data").iterdir())) == 1


def test_the_accelerate_config_is_read_once(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks, the sharded memory estimate and the machine's rank all use the one
    reading the checks made: a file edited meanwhile cannot make them disagree."""
    from fusekit.pipeline.distributed import check_accelerate_config
    from fusekit.pipeline.plan import plan

    data = write_corpus(tmp_path / "corpus.jsonl")
    config = two_cpu_ranks(tmp_path / "two_cpu_ranks.yaml")
    reads: list[Path] = []
    real = Path.read_text

    def counted(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == config.name:
            reads.append(self)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counted)
    answer = plan(recipe_for("finetune", models, data), accelerate_config=config)
    assert len(reads) == 1 and answer["training_memory_bytes"]["total"] > 0
    checked = check_accelerate_config(config)
    assert (checked.path, checked.num_processes, checked.machine_rank) == (config, 2, 0)

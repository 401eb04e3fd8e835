"""Every strategy trains FSDP2-sharded on two CPU ranks and writes what one process writes.

accelerate shards with FSDP only on accelerators: ranks that join with gloo on CPU
would train DDP under an FSDP config, silently.  ``fusekit.training.sharding`` makes
them shard with FSDP2 as launched, so this file drives the same ``fully_shard`` path
a GPU run takes (auto wrap, frozen and trainable parameters in one unit, a FULL
state-dict checkpoint, the gather to rank 0) through ``fusekit run
--accelerate-config``, exactly as a user would.

Each strategy runs once in one process with a global batch of 4 and once over two
ranks with 2 each.  accelerate gives rank r the seeded sampler's batches r, r + 2, …,
so every step sees the same four examples; the loss is averaged over the tokens of
all ranks, as in one process.  The weights then differ only by the order of float
sums: Adam turns that into at most a few ulps times its step, and at lr 1e-3 every
tensor stays within 1e-5 + 1e-4·|w| (fusellm, the largest, at a third of it) while
two steps move the trained weights about 2e-3, so a stale, unsaved or half-gathered
shard cannot pass.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.conftest import (
    STRATEGIES,
    cli,
    fusekit_cli,
    recipe_for,
    weights,
    write_corpus,
    write_recipe,
)

#: The configs docs/distributed.md shows: two ranks on one machine or one on each of two.
FSDP2_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
num_processes: 2
num_machines: {machines}
machine_rank: {rank}
main_process_ip: 127.0.0.1
main_process_port: {port}
mixed_precision: 'no'
use_cpu: false
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_cpu_ram_efficient_loading: true
  fsdp_sync_module_states: true
  fsdp_reshard_after_forward: true
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fsdp2_two_ranks(path: Path) -> Path:
    path.write_text(FSDP2_CONFIG.format(machines=1, rank=0, port=_free_port()))
    return path


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fsdp2_on_two_cpu_ranks_writes_what_one_process_writes(
    strategy: str, models: dict[str, Path], tmp_path: Path
) -> None:
    import torch

    recipe = recipe_for(strategy, models, write_corpus(tmp_path / "corpus.jsonl"))
    # a checkpoint at the last step: rank 0 saves it from the gathered shards too
    recipe["train"].update(steps=2, save_steps=2, lr=1e-3, schedule="constant", batch_size=4)
    one = write_recipe(tmp_path / "one.yaml", recipe)
    recipe["train"]["batch_size"] = 2  # per rank: the same global batch of 4
    two = write_recipe(tmp_path / "two.yaml", recipe)
    alone = cli("run", str(one), "-o", str(tmp_path / "one"))
    assert alone.code == 0, alone.stderr[-4000:]

    out = tmp_path / "out"
    config = fsdp2_two_ranks(tmp_path / "fsdp2.yaml")
    proc = fusekit_cli("run", str(two), "-o", str(out), "--accelerate-config", str(config))
    assert proc.returncode == 0, proc.stderr[-12000:]
    # sharded, not the DDP fallback: the trainer counts the modules FSDP2 made units
    assert "fusekit: trained with FSDP2:" in proc.stderr
    assert "sharded over 2 ranks" in proc.stderr
    # the checkpoint at the last step gathered the weights; training's end reuses them
    assert "the last checkpoint's gathered weights on rank 0" in proc.stderr
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["world_size"] == 2 and record["training"]["steps"] == 2
    assert (out / "README.md").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []

    expected, got = weights(tmp_path / "one"), weights(out)
    assert got and got.keys() == expected.keys()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)  # names the tensor


def test_fsdp2_over_two_machines_writes_from_machine_0_only(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """Two "machines" on this host run the same command, one rank each.

    Each works in its own folder with the same relative ``-o out``, as two hosts with
    their own disks would.  Machine 0 writes ``out``; machine 1 prepares in a private
    scratch folder and leaves nothing at or beside ``out`` except what ``Trainer``
    saves on every rank: its RNG state, in the checkpoint folder, which ``--resume``
    across machines therefore needs on a filesystem they share.
    """
    import torch

    recipe = recipe_for("finetune", models, write_corpus(tmp_path / "corpus.jsonl"))
    recipe["train"].update(steps=2, save_steps=2, lr=1e-3, schedule="constant", batch_size=4)
    alone = cli(
        "run", str(write_recipe(tmp_path / "one.yaml", recipe)), "-o", str(tmp_path / "one")
    )
    assert alone.code == 0, alone.stderr[-4000:]
    recipe["train"]["batch_size"] = 2
    two = write_recipe(tmp_path / "two.yaml", recipe)
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs, logs = [], []
    for rank in (0, 1):
        home = tmp_path / f"machine{rank}"
        home.mkdir()
        config = home / "fsdp2.yaml"
        config.write_text(FSDP2_CONFIG.format(machines=2, rank=rank, port=port))
        logs.append(tmp_path / f"machine{rank}.log")  # files: a full pipe would stall a rank
        command = [sys.executable, "-m", "fusekit", "run", str(two), "-o", "out",
                   "--accelerate-config", str(config)]  # fmt: skip
        with logs[-1].open("w") as log:
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=home,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # its accelerate launcher and ranks too
    said = [log.read_text() for log in logs]
    assert codes == [0, 0], said[0][-6000:] + said[1][-6000:]
    assert "machine 0 writes out" in said[1]

    out = tmp_path / "machine0" / "out"
    record = json.loads((out / "fusekit.json").read_text())
    assert record["training"]["world_size"] == 2
    torch.testing.assert_close(weights(out), weights(tmp_path / "one"), atol=1e-5, rtol=1e-4)
    machine1 = tmp_path / "machine1"
    assert {p.name for p in machine1.iterdir()} <= {"fsdp2.yaml", ".out.checkpoints"}
    saved = [p for p in (machine1 / ".out.checkpoints").rglob("*") if p.is_file()]
    assert all(p.name.startswith("rng_state_") for p in saved), saved

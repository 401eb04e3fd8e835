"""Entry point of one rank under ``accelerate launch``: runs a serialized training job."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(job_path: str) -> None:
    from pydantic import TypeAdapter

    from fusekit.recipe.common import DataRef, TrainSpec
    from fusekit.training.run import train_causal_lm

    job = json.loads(Path(job_path).read_text())
    summary = train_causal_lm(
        job["model_dir"],
        TypeAdapter(DataRef).validate_python(job["data"]),
        TrainSpec.model_validate(job["spec"]),
        job["out_dir"],
        trainable=job["trainable"],
        checkpoint_dir=job["checkpoint_dir"],
        log_path=job["log_path"],
    )
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        summary["world_size"] = dist.get_world_size() if dist.is_initialized() else 1
        Path(job_path).with_suffix(".result.json").write_text(json.dumps(summary))
    if dist.is_available() and dist.is_initialized():
        # Leave together and shut the process group down before the interpreter exits:
        # a rank that exits while gloo's threads still run can abort ("terminate called
        # without an active exception"), failing a run whose training had succeeded.
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

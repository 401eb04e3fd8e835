"""Entry point of one rank under ``accelerate launch``: the stages of a run from a job file.

The parent (``fusekit.pipeline.distributed.run_distributed``) wrote the recipe, the prepared
inputs and the stage context; each rank rebuilds its units from them.  Rank 0
writes the result (or the user-facing error) beside the job file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fusekit.errors import FusekitError
from fusekit.log import library_bars_off
from fusekit.pipeline.stages import StageContext, rank, run_stages
from fusekit.recipe import parse_recipe
from fusekit.registry import strategy_class
from fusekit.strategies.base import Prepared


def main(job_path: str) -> int:
    import torch.distributed as dist
    from accelerate import PartialState

    library_bars_off()
    job = Path(job_path)
    spec = json.loads(job.read_text())
    PartialState()  # joins the process group that accelerate launch set up
    status = 0
    try:
        recipe = parse_recipe(spec["recipe"], source=str(job))
        strategy = strategy_class(recipe.strategy)(recipe)
        result = run_stages(
            strategy,
            Prepared.model_validate(spec["prepared"]),
            StageContext.model_validate(spec["context"]),
        )
        if result is not None:
            job.with_suffix(".result.json").write_text(result.model_dump_json())
    except FusekitError as exc:
        if rank() == 0:
            job.with_suffix(".error.json").write_text(json.dumps({"error": str(exc)}))
        status = 2
    if dist.is_available() and dist.is_initialized():
        # Leave together and shut the process group down before the interpreter exits:
        # a rank that exits while gloo's threads still run can abort ("terminate called
        # without an active exception"), failing a run whose training had succeeded.
        if status == 0:
            dist.barrier()
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

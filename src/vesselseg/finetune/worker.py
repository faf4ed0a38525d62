"""Per-rank entry point: `python -m vesselseg.finetune.worker --job <job.json> [--result <result.json>]`.

torchrun starts one of these per GPU (or per CPU process); each runs the same `TrainJob`. Rank 0 writes the
result where the stage reads it. `record` hands a failing rank's traceback to torchrun's error summary.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import warnings
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from vesselseg.finetune.launch import die_with_parent, log_as_rank, process_rank


def quiet_libraries() -> None:
    """DeepSpeed logs its whole config at INFO and torch warns about internals; keep the console for our lines."""
    import deepspeed

    deepspeed.utils.logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")


@record
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vesselseg.finetune.worker")
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)
    log_as_rank()
    quiet_libraries()
    from vesselseg.finetune.loop import TrainJob, train

    result = train(TrainJob.model_validate_json(args.job.read_text()))
    if process_rank() == 0 and args.result is not None:
        args.result.write_text(result.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

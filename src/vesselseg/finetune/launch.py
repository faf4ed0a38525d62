"""Starting the ranks: torchrun with one process per GPU, or N CPU processes on gloo, output streamed through.

Inside a process some other launcher already started as one rank (mpirun in a Kubeflow TrainJob, or torchrun
itself) the stage trains in-process instead; `launched_rank` tells which case applies.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from vesselseg.finetune.errors import TrainingError

LAUNCHED_AT_ENV = "VESSELSEG_LAUNCHED_AT"
TAIL_CHARS = 20000
TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> None:
    """Asks Linux to send `sig` to this process when its parent dies.

    torchrun starts each rank in a session of its own, so killing the stage's process group (or torchrun
    itself) with SIGKILL would otherwise leave the ranks running as orphans that keep training and publishing.
    """
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() == 1:  # the parent was gone before the request took effect
        os.kill(os.getpid(), sig)


def launched_rank() -> bool:
    """True in a process started as one rank of a distributed job (torchrun or OpenMPI set these)."""
    return "WORLD_SIZE" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ


def launched_world_size() -> int:
    """The ranks of the distributed job this process was started in (see `launched_rank`)."""
    return int(os.environ.get("WORLD_SIZE") or os.environ["OMPI_COMM_WORLD_SIZE"])


def process_rank() -> int:
    """This process's global rank as its launcher (OpenMPI or torchrun) set it; 0 outside a distributed job."""
    for var in ("OMPI_COMM_WORLD_RANK", "RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def log_as_rank() -> None:
    """Console logging for one rank: INFO from rank 0, warnings and errors from the others, each line tagged."""
    rank = process_rank()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s",
    )


def quiet_libraries() -> None:
    """DeepSpeed logs its whole config at INFO and torch warns about internals; keep the console for our lines."""
    import deepspeed

    deepspeed.utils.logger.setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")


def worker_env(nproc: int, on_gpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # DataLoader workers fork after the tokenizer has run; its thread pool must not be inherited.
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Shares the cores out: torchrun would otherwise pin every rank to one thread.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    if on_gpu:
        # Micro-batch, validation and last-batch shapes differ; growable segments keep the caching allocator from
        # stranding memory between them near the card's limit (the sa2va-4b throughput rows ran at 70 of 80 GB).
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    else:
        env["DS_ACCELERATOR"] = "cpu"
    if sys.stdout.isatty():
        env["VESSELSEG_TTY"] = "1"
    env[LAUNCHED_AT_ENV] = str(time.time())
    return env


def run_workers(module: str, job: Path, result: Path, nproc: int, on_gpu: bool) -> None:
    """Runs `python -m <module> --job <job> --result <result>` on `nproc` ranks (the stage names its rank entry point)
    and streams their output; raises on failure.

    The ranks share this process group, so killing the stage's group (a pod being stopped) stops them too.
    """
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", module, "--job", str(job), "--result", str(result),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=worker_env(nproc, on_gpu),
        # SIGTERM lets torchrun stop its ranks in turn if the stage dies without stopping it.
        preexec_fn=lambda: die_with_parent(signal.SIGTERM),
    )
    assert process.stdout is not None
    tail = ""
    try:
        # Raw chunks, not lines: a progress bar redraws with carriage returns.
        while chunk := os.read(process.stdout.fileno(), 65536):
            text = chunk.decode(errors="replace")
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-TAIL_CHARS:]
        code = process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    if code != 0:
        raise TrainingError(failure_message(code, tail))
    if not result.is_file():
        raise TrainingError(f"training workers exited cleanly but rank 0 wrote no result at {result}")


def failure_message(code: int, output: str) -> str:
    """The failing rank, its exit code and exception (from torchrun's error summary), then the output's tail."""
    ranks = re.findall(r"^\s*rank\s*:\s*(\d+)", output, flags=re.MULTILINE)
    exit_codes = re.findall(r"^\s*exitcode\s*:\s*(-?\d+)", output, flags=re.MULTILINE)
    errors = re.findall(
        r"^(?:\[rank\d+\]:)?\s*((?:[\w.]+\.)?\w+(?:Error|Exception|Interrupt): .*)$", output, flags=re.MULTILINE
    )
    where = f" on rank {ranks[0]}" if ranks else ""
    worker = f", worker exit code {exit_codes[0]}" if exit_codes else ""
    cause = f": {errors[-1].strip()}" if errors else ""
    lines = output.replace("\r", "\n").splitlines()[-TAIL_LINES:]
    return (
        f"training failed{where} (torchrun exit code {code}{worker}){cause}\n"
        "last lines of the workers' output:\n" + "\n".join(lines)
    )

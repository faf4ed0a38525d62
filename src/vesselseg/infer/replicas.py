"""Running a plan: one server per model copy, results merged in this process.

A plan with one copy is served by threads of this process; with several, each copy gets its own process
(`torch.multiprocessing`, spawn: each loads its own copy on its own GPUs, or a share of the CPU cores). All copies
pull fixed micro-batches from one shared queue — a copy that runs faster simply takes more — and send results
back to this process, the only one that writes anything. Timing starts when every copy has loaded (and warmed
up, if asked), so images/s measures inference, not loading.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vesselseg.infer.errors import InferError
from vesselseg.infer.images import ImageSource
from vesselseg.infer.pipelined import ImageResult, Task, serve
from vesselseg.infer.predictor import PredictorSpec
from vesselseg.infer.strategy import Plan


@dataclass
class Execution:
    images: int
    started: float  # time.time() when every copy was ready
    ended: float  # time.time() when the last result arrived
    load_s: list[float] = field(default_factory=list)
    peak_bytes: dict[int, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _copy_main(
    rank: int,
    spec: PredictorSpec,
    plan: Plan,
    images: ImageSource,
    tasks: queue.Queue[Task | None],
    results: queue.Queue[tuple],
    warmup: Task | None,
    cpu_threads: int,
) -> None:
    """Entry point of a copy's process."""
    import torch

    group = plan.groups[rank]
    # Copies share the cores: without this each process would start a thread per core.
    torch.set_num_threads(cpu_threads)
    layers = plan.layers[rank] if plan.layers else []
    serve(
        rank,
        lambda: spec.build(group, layers, plan.budgets),
        images,
        tasks.get,
        results.put,
        plan.in_flight,
        group,
        warmup,
    )


def execute(
    plan: Plan,
    spec: PredictorSpec,
    images: ImageSource,
    tasks: list[Task],
    on_result: Callable[[list[ImageResult]], None],
    warmup: bool = False,
    isolate: bool = False,
) -> Execution:
    """Runs every task on the plan's copies; `on_result` is called in this thread, once per task, in any order.

    `isolate` serves even a single copy from its own process, so that nothing it allocates outlives the call.
    """
    warmup_task = tasks[0] if warmup and tasks else None
    copies = plan.replicas
    if copies == 1 and not isolate:
        task_queue: queue.Queue = queue.Queue()
        result_queue: queue.Queue = queue.Queue()
        group = plan.groups[0]
        layers = plan.layers[0] if plan.layers else []
        thread = threading.Thread(
            target=serve,
            args=(
                0,
                lambda: spec.build(group, layers, plan.budgets),
                images,
                task_queue.get,
                result_queue.put,
                plan.in_flight,
                group,
                warmup_task,
            ),
            name="copy0",
            daemon=True,
        )
        thread.start()
        execution = _collect(plan, tasks, task_queue, result_queue, on_result, lambda: None)
        # Let the copy go before returning: a thread still freeing it at interpreter exit aborts the process.
        thread.join()
        return execution

    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    task_queue, result_queue = context.Queue(), context.Queue()
    cpu_threads = max(1, (os.cpu_count() or 1) // copies)
    processes = [
        context.Process(
            target=_copy_main,
            args=(rank, spec, plan, images, task_queue, result_queue, warmup_task, cpu_threads),
            name=f"infer-copy{rank}",
            daemon=True,
        )
        for rank in range(copies)
    ]
    for process in processes:
        process.start()

    def check_alive() -> None:
        for rank, process in enumerate(processes):
            if process.exitcode not in (None, 0):
                raise InferError(
                    f"inference copy {rank} ({plan.groups[rank] or 'CPU'}) died, exit code {process.exitcode}"
                )

    try:
        execution = _collect(plan, tasks, task_queue, result_queue, on_result, check_alive)
        for process in processes:
            process.join(timeout=60)
        return execution
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)


def _next(results: queue.Queue, check_alive: Callable[[], None]) -> tuple:
    while True:
        try:
            message = results.get(timeout=2.0)
        except queue.Empty:
            check_alive()
            continue
        if message[0] == "error":
            raise InferError(f"inference copy {message[1]} failed:\n{message[2]}")
        return message


def _collect(
    plan: Plan,
    tasks: list[Task],
    task_queue: queue.Queue,
    result_queue: queue.Queue,
    on_result: Callable[[list[ImageResult]], None],
    check_alive: Callable[[], None],
) -> Execution:
    load_s = []
    while len(load_s) < plan.replicas:
        kind, _, info = _next(result_queue, check_alive)
        if kind == "ready":
            load_s.append(info["load_s"])
    started = time.time()
    for task in tasks:
        task_queue.put(task)
    for _ in range(plan.replicas * plan.in_flight):
        task_queue.put(None)
    remaining, finished, peaks, ended = len(tasks), 0, {}, started
    while remaining or finished < plan.replicas:
        kind, _, payload = _next(result_queue, check_alive)
        if kind == "result":
            on_result(payload)
            remaining -= 1
            ended = time.time()
        elif kind == "done":
            finished += 1
            for device, peak in payload["peak_bytes"].items():
                peaks[device] = max(peaks.get(device, 0), peak)
    return Execution(sum(len(t.sample_ids) for t in tasks), started, ended, load_s, peaks)

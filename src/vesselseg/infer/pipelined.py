"""One model copy serving micro-batches, several in flight at once.

Each of `in_flight` threads takes a micro-batch, reads its images and runs the whole copy on it. On a copy split
over GPUs (the sharded layout), while one thread's micro-batch runs its last layers on GPU 1, another's can run
the vision tower on GPU 0: with `shards + 1` in flight every GPU of the copy has work, which turns the sharded
layout into a pipeline without cutting the model's forward into stages. On a one-GPU copy several in flight
overlap micro-batches' CPU preprocessing with another's GPU work (three by default: a 26B copy's CPU work per
micro-batch is about twice its GPU work). Kernels go to each device's default stream in
launch order, so results are the same as one at a time; the GIL is released while kernels run and images decode.

Messages go to `put` as tuples: ("ready", rank, info), ("result", task index, [ImageResult]), ("error", rank,
traceback) and ("done", rank, info).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vesselseg.infer.images import ImageSource
from vesselseg.infer.predictor import ImagePrediction, Predictor
from vesselseg.metrics.levels import ProbabilityMap


@dataclass(frozen=True)
class Task:
    """A fixed micro-batch: the same images always go through the model together, whatever the strategy."""

    index: int
    sample_ids: tuple[str, ...]


@dataclass
class ImageResult:
    prob: ProbabilityMap
    n_seg: int
    text: str

    @property
    def sample_id(self) -> str:
        return self.prob.sample_id


def run_task(predictor: Predictor, images: ImageSource, task: Task) -> list[ImageResult]:
    predictions: list[ImagePrediction] = predictor([images.image(i) for i in task.sample_ids])
    return [
        ImageResult(ProbabilityMap.from_probability(p.probability, i), p.n_seg, p.text)
        for i, p in zip(task.sample_ids, predictions, strict=True)
    ]


def serve(
    rank: int,
    build: Callable[[], Predictor],
    images: ImageSource,
    get_task: Callable[[], Task | None],
    put: Callable[[tuple], None],
    in_flight: int,
    devices: list[int],
    warmup: Task | None = None,
) -> None:
    """Loads the copy, reports ready, then serves tasks until each of its `in_flight` threads gets None.

    With `warmup`, every thread first runs that task once, all at the same time, so that kernels, per-thread
    handles and memory pools are ready for the steady state before the copy reports ready.
    """
    try:
        started = time.perf_counter()
        predictor = build()
    except BaseException:  # noqa: BLE001 - whatever failed, the collecting process must hear of it, not hang
        put(("error", rank, traceback.format_exc()))
        return
    loaded = time.perf_counter()
    warm = threading.Barrier(in_flight + 1)

    def work() -> None:
        try:
            if warmup is not None:
                run_task(predictor, images, warmup)
            warm.wait()
            while (task := get_task()) is not None:
                put(("result", task.index, run_task(predictor, images, task)))
        except threading.BrokenBarrierError:
            return  # another thread's warm-up failed and reported it
        except BaseException:  # noqa: BLE001 - reported to the collector, which stops the run
            put(("error", rank, traceback.format_exc()))
            warm.abort()

    threads = [threading.Thread(target=work, name=f"copy{rank}-flight{i}", daemon=True) for i in range(in_flight)]
    for thread in threads:
        thread.start()
    try:
        warm.wait()
    except threading.BrokenBarrierError:
        return
    put(("ready", rank, {"load_s": loaded - started, "warmup_s": time.perf_counter() - loaded}))
    for thread in threads:
        thread.join()
    peaks = {device: torch.cuda.max_memory_allocated(device) for device in devices}
    put(("done", rank, {"peak_bytes": peaks}))

"""Where one model copy's time goes: image reading, preprocessing, the forward pass and post-processing.

    python benchmarks/infer_profile.py [--preset sa2va-26b] [--gpus 0] [--images 32] [--batch-size 4]
    python benchmarks/infer_profile.py --preset tiny --images 8      # on the CPU

Images are synthetic 584×565 PNG files, read as the stage reads a dataset's. Part 1 runs the copy's micro-batches
one at a time with a device synchronisation between phases, so each phase's wall time is its own. Part 2 serves
the same micro-batches through `execute` with 1, 2 and 3 in flight on the same GPUs, each run on the same
loaded-once plan, to show how much of part 1's CPU work the in-flight threads hide. A copy whose GPU time is a
small share of its phases is CPU-bound, and more copies per host will contend for that CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vesselseg.infer import (
    FileImages,
    InferConfig,
    PredictorSpec,
    RandomPreset,
    SyntheticImages,
    Task,
    choose_plan,
    execute,
    visible_gpus,
)
from vesselseg.infer.predictor import combined_probability
from vesselseg.infer.runner import make_tasks, model_footprint
from vesselseg.metrics import ProbabilityMap
from vesselseg.model.losses import upsample_logits
from vesselseg.model.prompts import FORCED_ANSWER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_gpu import IMAGE_HW, PROMPT  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phases(spec: PredictorSpec, gpu: int | None, images: FileImages, tasks: list[Task]) -> dict[str, float]:
    """Mean seconds per micro-batch of each phase, the first (warm-up) batch left out."""
    group = [] if gpu is None else [gpu]
    model, processor = spec.source.load(spec.device_map(group, [], {}), spec.torch_dtype(group))
    device = model.device
    answer = processor.answer_ids(FORCED_ANSWER)
    totals: dict[str, list[float]] = {"read": [], "preprocess": [], "to device": [], "forward": [], "postprocess": []}
    with torch.no_grad():
        for index, task in enumerate(tasks):
            marks = [time.perf_counter()]
            pictures = [images.image(i) for i in task.sample_ids]
            marks.append(time.perf_counter())
            batch = processor(pictures, [PROMPT] * len(pictures), answer_ids=[answer] * len(pictures))
            marks.append(time.perf_counter())
            batch = batch.to(device, model.dtype)
            _sync(device)
            marks.append(time.perf_counter())
            logits = model(**{**batch, "labels": None}).mask_logits
            _sync(device)
            marks.append(time.perf_counter())
            for picture, logit in zip(pictures, logits, strict=True):
                probability = upsample_logits(logit, picture.shape[:2]).sigmoid().cpu().numpy()
                ProbabilityMap.from_probability(combined_probability([probability], picture.shape[:2]), "timing")
            marks.append(time.perf_counter())
            if index:
                for name, start, end in zip(totals, marks, marks[1:], strict=False):
                    totals[name].append(end - start)
    del model
    if gpu is not None:
        torch.cuda.empty_cache()
    return {name: float(np.mean(values)) for name, values in totals.items()}


def served(spec: PredictorSpec, gpu: int | None, images: FileImages, tasks: list[Task], in_flight: int) -> float:
    gpus = [g for g in visible_gpus() if g.index == gpu]
    footprint = model_footprint(spec, bool(gpus), IMAGE_HW)
    config = InferConfig(strategy="replicas" if gpus else "cpu", replicas=1, in_flight=in_flight,
                         batch_size=len(tasks[0].sample_ids))  # fmt: skip
    plan = choose_plan(footprint, gpus, config)
    execution = execute(plan, spec, images, tasks, lambda results: None, warmup=True, isolate=bool(gpus))
    return execution.images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sa2va-26b")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--in-flight", default="1,2,3")
    args = parser.parse_args()
    gpu = 0 if torch.cuda.is_available() else None
    machine = torch.cuda.get_device_name(0) if gpu is not None else platform.processor() or platform.machine()
    spec = PredictorSpec(source=RandomPreset(name=args.preset), prompt=PROMPT)
    ids = [f"synthetic{i:03d}" for i in range(args.images)]
    images = SyntheticImages(*IMAGE_HW, seed=0).to_files(ids, Path(tempfile.mkdtemp(prefix="infer-profile-")))
    tasks = make_tasks(ids, args.batch_size)
    times = phases(spec, gpu, images, tasks)
    total = sum(times.values())
    print(f"# One copy of {args.preset} on {machine} ({os.cpu_count()} CPU cores, torch threads "
          f"{torch.get_num_threads()}), batch {args.batch_size}, 584×565 images\n")  # fmt: skip
    print("| phase | ms per micro-batch | share |\n|---|---:|---:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / total:.0%} |")
    print(f"| all, one at a time | {total * 1e3:.1f} | {args.batch_size / total:.2f} images/s |\n")
    print("| in flight | images/s |\n|---:|---:|")
    for in_flight in (int(n) for n in args.in_flight.split(",")):
        print(f"| {in_flight} | {served(spec, gpu, images, tasks, in_flight):.2f} |", flush=True)


if __name__ == "__main__":
    main()

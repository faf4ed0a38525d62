"""Where a CPU training step of the demo goes: data loading and augmentation, forward, backward, optimizer step.

    python benchmarks/demo_profile.py [--steps 10] [--set autocast=bf16 --set micro_batch_size=4] [--ops 15]
        [--variant name='{"autocast": "off"}' --variant name='{...}' --rounds 2]

Unlike train_profile.py (a fixed batch through train_gpu.py's engine), this runs the demo's own path on one CPU
rank: the synthetic dataset data-prep makes (prepared into a temporary folder), `MicroBatches` with the demo's
augmentation, the `tiny-refined` preset through `vesselseg.finetune.engine.initialize` (DeepSpeed ZeRO-2, gloo) and
`vesselseg.finetune.loop.forward_context` for the forward, so each FinetuneConfig setting is measured as the stage would
run it. Several `--variant`s are interleaved round by round (other work on a shared machine slows them alike).

Each phase is timed in wall seconds and in this process's CPU seconds: on a machine shared with other jobs the
wall time stretches with the load while the CPU time mostly does not, so the CPU column compares settings better.
`--ops N` lists the N torch operators with the most CPU time over the timed steps (torch.profiler), forward and
backward together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

PHASES = ("data", "forward", "backward", "optimizer step")


class Clock:
    """Wall and process-CPU seconds per phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def time(self, name: str, action):
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        self.wall[name] += time.perf_counter() - wall
        self.cpu[name] += time.process_time() - cpu
        return result


def contiguous_refiner(model: torch.nn.Module) -> None:
    """The mask refiner as it ran before it went channels-last (2026-12-06): contiguous (NCHW) convolutions."""
    import types

    import torch.nn.functional as F

    def forward(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(logits[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
        correction = self.output(self.body(torch.cat([images.to(upsampled.dtype), upsampled], dim=1)))
        return (upsampled + correction)[:, 0]

    model.mask_refiner.forward = types.MethodType(forward, model.mask_refiner)


def run_variant(dataset, overrides: dict[str, Any], steps: int, warmup: int, ops: int) -> dict[str, Any]:
    from vesselseg.finetune.base_model import load_base_model
    from vesselseg.finetune.config import FinetuneConfig
    from vesselseg.finetune.data import DataOrder, MicroBatches, loader, split_samples
    from vesselseg.finetune.engine import initialize
    from vesselseg.finetune.loop import forward_context
    from vesselseg.model import apply_training_recipe

    fields = {key: value for key, value in overrides.items() if key != "bench_nchw_refiner"}
    config = FinetuneConfig.model_validate({"steps": warmup + steps + (1 if ops else 0)} | fields)
    torch.manual_seed(config.seed)
    model, processor = load_base_model(
        config.base_model, config.model_overrides, config.sam2, folder=None, store=None,
        device=torch.device("cpu"), dtype=torch.float32, ref=None,
    )  # fmt: skip
    if overrides.get("bench_nchw_refiner"):
        contiguous_refiner(model)
    engine = initialize(apply_training_recipe(model), config, 1, "fp32", on_gpu=False)
    accumulation = config.gradient_accumulation(1)
    samples = split_samples(dataset, "train")
    order = DataOrder(len(samples), config.global_batch_size, config.micro_batch_size, config.seed)
    batches = iter(
        loader(
            MicroBatches(dataset, samples, processor, order, config.augment, 1, config.steps, accumulation, 0, 1),
            config.num_workers,
        )
    )
    clock = Clock()

    def step(clock: Clock) -> float:
        loss = 0.0
        for _ in range(accumulation):
            _, batch = clock.time("data", lambda: next(batches))
            with forward_context(config, on_gpu=False):
                output = clock.time("forward", lambda b=batch: engine(**b))
            clock.time("backward", lambda o=output: engine.backward(o.loss))
            clock.time("optimizer step", engine.step)
            loss += float(output.loss.detach()) / accumulation
        return loss

    for _ in range(warmup):
        step(Clock())
    started = time.perf_counter()
    losses = [step(clock) for _ in range(steps)]
    wall = time.perf_counter() - started
    table = None
    if ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(Clock())
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ops, max_name_column_width=50)
    return {
        "overrides": overrides,
        "step_s": wall / steps,
        "samples_per_s": config.global_batch_size * steps / wall,
        "wall_ms": {name: 1e3 * clock.wall[name] / steps for name in PHASES},
        "cpu_ms": {name: 1e3 * clock.cpu[name] / steps for name in PHASES},
        "mean_loss": sum(losses) / len(losses),
        "threads": torch.get_num_threads(),
        "ops": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON", help="FinetuneConfig fields")
    parser.add_argument("--rounds", type=int, default=1, help="times each variant runs, interleaved")
    parser.add_argument("--ops", type=int, default=0, help="list the N operators with the most CPU time")
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's, one per core); 1 makes the CPU column "
        "exact on a busy machine, where idle OpenMP threads spinning for their peers count as CPU time",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="append one JSON line per measurement here")
    args = parser.parse_args()

    import deepspeed

    from vesselseg.data import DataPrepConfig, PreparedDataset, prepare_dataset
    from vesselseg.finetune.launch import quiet_libraries

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", "29518")
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    variants = dict(item.split("=", 1) for item in args.variant) or {"defaults": "{}"}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "dataset"
        prepare_dataset(DataPrepConfig(), root)
        dataset = PreparedDataset(root)
        for round_ in range(args.rounds):
            for name, overrides in variants.items():
                result = run_variant(dataset, json.loads(overrides), args.steps, args.warmup, args.ops)
                result |= {"variant": name, "round": round_, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
                if table := result.pop("ops"):
                    print(table)
                print(
                    f"{name} (round {round_}): {result['step_s']:.2f} s/step, {result['samples_per_s']:.2f} samples/s, "
                    + ", ".join(f"{p} {result['wall_ms'][p]:.0f}/{result['cpu_ms'][p]:.0f}" for p in PHASES)
                    + " ms wall/CPU per step",
                    flush=True,
                )
                if args.json:
                    with args.json.open("a") as out:
                        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

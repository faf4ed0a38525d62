"""Inference strategies on the GPUs present: images/s, GPU utilisation and peak memory, plus mask agreement.

    benchmarks/infer_gpu.sh              # 4 GPUs (else 2): random-weight sa2va-26b and sa2va-4b in bf16
    benchmarks/infer_gpu.sh --dry-run    # the tiny preset on the CPU: checks the script end to end

Cases (same synthetic 584×565 images read from PNG files as the stage reads a dataset's, same micro-batches, one
warm-up batch per copy, timing from the moment every copy is loaded and warm to the last result):
  - sa2va-26b, accelerate's balanced `infer_auto_device_map` over all GPUs, one batch at a time: the old work's
    `device_map="auto"` (the baseline);
  - sa2va-26b, the automatic choice (on 80 GB cards a bf16 copy fits: replicas), and one replica alone;
  - sa2va-26b with every GPU capped at 40 GiB (as on 40 GB cards, where a copy does not fit): the baseline under
    the cap, `sharded` (balanced layout, one batch at a time) and `pipelined` (the chooser's pick under the cap);
  - sa2va-4b, `forced` against `generate`.
Weights are seeded random, built on the meta device and created directly on their GPUs in bf16, with the mask
head's output layer scaled per preset so that the random logits have a standard deviation of 2 on the first
micro-batch: unscaled, every map is 0.5 ± 0.01 and comparing layouts would compare rounding noise. Every 26B case's
maps are compared with the replicas' (bf16 tolerance below). The table goes to stdout, and with OUT set to
$OUT/infer_gpu.md (+ .json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import accelerate
import numpy as np
import torch
import transformers

from vesselseg.infer import (
    Execution,
    FileImages,
    InferConfig,
    PredictorSpec,
    RandomPreset,
    SyntheticImages,
    Task,
    choose_plan,
    execute,
    footprint_of,
    meta_model,
    visible_gpus,
)
from vesselseg.infer.runner import make_tasks
from vesselseg.infer.strategy import Gpu, Plan
from vesselseg.metrics import ProbabilityMap, level
from vesselseg.model import predict
from vesselseg.model.prompts import segmentation_prompt

PROMPT = segmentation_prompt("blood vessels")
# bf16 tolerance for "same masks": the maps of one image may differ by rounding, not by what they show.
MAX_MASK_DISAGREEMENT = 0.01  # fraction of mask pixels (p ≥ 0.5) that differ
MAX_MEAN_ABS_DIFF = 2.0  # mean |Δp| in 1/255 steps
TARGET_LOGIT_SD = 2.0
IMAGE_HW = (584, 565)  # DRIVE's size


@dataclass
class Case:
    name: str
    preset: str
    config: InferConfig
    role: str = ""  # baseline / auto / one_gpu / capped_baseline / sharded / pipelined / forced / generate
    optional: bool = False
    # Weak scaling: N copies get N times the images, so that filling and draining the copies' in-flight slots
    # weighs the same as in the one-GPU case it is compared with (a few seconds of work would be mostly ramp).
    images_per_copy: bool = False


@dataclass
class Outcome:
    case: Case
    plan: Plan
    execution: Execution
    wall_s: float
    utilisation: dict[int, float] = field(default_factory=dict)
    maps: dict[str, ProbabilityMap] = field(default_factory=dict)
    zero_seg: int = 0


class GpuSampler:
    """`nvidia-smi` every 100 ms in a thread: (time, GPU, utilisation %)."""

    def __init__(self, enabled: bool) -> None:
        self.samples: list[tuple[float, int, float]] = []
        self.process = None
        if enabled and shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE,
                text=True,
            )
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit():
                self.samples.append((time.time(), int(parts[0]), float(parts[1])))

    def mean(self, start: float, end: float) -> dict[int, float]:
        window: dict[int, list[float]] = {}
        for t, gpu, value in list(self.samples):
            if start <= t <= end:
                window.setdefault(gpu, []).append(value)
        return {gpu: float(np.mean(v)) for gpu, v in sorted(window.items())}

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()


def cases(n_gpus: int, dry_run: bool, cap_gib: float, max_new_tokens: int) -> list[Case]:
    if dry_run:
        tiny = "tiny"
        return [
            Case("tiny, cpu (auto)", tiny, InferConfig(), "forced"),
            Case("tiny, replicas: 2 CPU processes", tiny, InferConfig(strategy="replicas", replicas=2), "replicas"),
            Case("tiny, 3 micro-batches in flight", tiny, InferConfig(in_flight=3), "pipelined"),
            Case("tiny, generate", tiny, InferConfig(mode="generate", max_new_tokens=max_new_tokens), "generate"),
        ]
    capped = {"memory": {"max_memory_gib": cap_gib}}
    big, small = "sa2va-26b", "sa2va-4b"
    return [
        Case(
            "26B accelerate auto map, all GPUs (baseline)",
            big,
            InferConfig(strategy="sharded", layout="accelerate"),
            "baseline",
        ),
        Case("26B automatic choice", big, InferConfig(), "auto", images_per_copy=True),
        Case(
            f"26B accelerate auto map, {cap_gib:g} GiB cap",
            big,
            InferConfig(strategy="sharded", layout="accelerate", **capped),
            "capped_baseline",
        ),
        Case(f"26B pipelined, {cap_gib:g} GiB cap", big, InferConfig(strategy="pipelined", **capped), "pipelined"),
        Case(f"26B sharded, {cap_gib:g} GiB cap", big, InferConfig(strategy="sharded", **capped), "sharded"),
        Case("4B forced (automatic choice)", small, InferConfig(), "forced"),
        Case(
            "4B generate (automatic choice)",
            small,
            InferConfig(mode="generate", max_new_tokens=max_new_tokens),
            "generate",
        ),
        Case("26B one replica, one GPU", big, InferConfig(strategy="replicas", replicas=1), "one_gpu"),
        Case(
            f"26B pipelined 1 × {n_gpus}, {cap_gib:g} GiB cap",
            big,
            InferConfig(strategy="pipelined", shards=n_gpus, **capped),
            "pipelined_one_copy",
            optional=True,
        ),
    ]


def mask_gain(preset: str, gpus: list[Gpu], images: FileImages, task: Task) -> float:
    """The mask-head gain that gives the preset's random logits a standard deviation of TARGET_LOGIT_SD."""
    group = [gpus[0].index] if gpus else []
    spec = PredictorSpec(source=RandomPreset(name=preset, seed=0), prompt=PROMPT)
    model, processor = spec.source.load(spec.device_map(group, [], {}), spec.torch_dtype(group))
    pictures = [images.image(i) for i in task.sample_ids]
    results = predict(model, processor, pictures, [PROMPT] * len(pictures), batch_size=len(pictures))
    del model
    if gpus:
        torch.cuda.empty_cache()
    p = np.concatenate([r.probabilities[0].ravel() for r in results]).astype(np.float64)
    sd = float(np.std(np.log(p) - np.log1p(-p)))
    gain = TARGET_LOGIT_SD / sd
    print(f"{preset}: random mask logits have sd {sd:.3g}; mask-head gain {gain:.3g}", flush=True)
    return gain


def run_case(
    case: Case, gpus: list[Gpu], images: FileImages, tasks: list[Task], per_case: int, sampler: GpuSampler, gain: float
) -> Outcome:
    """Runs the first `per_case` tasks, or per_case per copy for an `images_per_copy` case."""
    dtype = torch.bfloat16 if gpus else torch.float32
    source = RandomPreset(name=case.preset, seed=0, mask_gain=gain)
    footprint = footprint_of(meta_model(source.config(), dtype), dtype, IMAGE_HW)
    config = case.config.model_copy(update={"batch_size": len(tasks[0].sample_ids)})
    plan = choose_plan(footprint, gpus, config)
    tasks = tasks[: per_case * (plan.replicas if case.images_per_copy else 1)]
    spec = PredictorSpec(
        source=source, layout=config.layout, mode=config.mode, prompt=PROMPT, max_new_tokens=config.max_new_tokens
    )
    maps: dict[str, ProbabilityMap] = {}
    zero = 0

    def keep(results) -> None:
        nonlocal zero
        for result in results:
            maps[result.sample_id] = result.prob
            zero += result.n_seg == 0

    print(f"\n== {case.name}: {plan.describe()}\n   because {plan.reason}", flush=True)
    started = time.perf_counter()
    # On GPUs each case gets fresh processes, so no case inherits another's memory.
    execution = execute(plan, spec, images, tasks, keep, warmup=True, isolate=bool(gpus))
    wall = time.perf_counter() - started
    print(
        f"   {execution.images_per_s:.2f} images/s ({execution.images} images in {execution.seconds:.2f} s; "
        f"load {max(execution.load_s):.1f} s; wall {wall:.1f} s)",
        flush=True,
    )
    return Outcome(case, plan, execution, wall, sampler.mean(execution.started, execution.ended), maps, zero)


def agreement(reference: dict[str, ProbabilityMap], other: dict[str, ProbabilityMap]) -> dict[str, float]:
    """Over `other`'s images, all of which `reference` has."""
    diffs = [np.abs(reference[k].levels.astype(np.int16) - other[k].levels.astype(np.int16)) for k in other]
    masks = [reference[k].mask_at(level(0.5)) != other[k].mask_at(level(0.5)) for k in other]
    disagreement = float(np.mean(np.concatenate([m.ravel() for m in masks])))
    mean_abs = float(np.mean([d.mean() for d in diffs]))
    return {
        "identical_images": sum(int(d.max() == 0) for d in diffs),
        "images": len(diffs),
        "max_abs_diff": int(max(d.max() for d in diffs)),
        "mean_abs_diff": mean_abs,
        "mask_disagreement": disagreement,
        "passed": disagreement <= MAX_MASK_DISAGREEMENT and mean_abs <= MAX_MEAN_ABS_DIFF,
    }


def ratio(outcomes: dict[str, Outcome], top: str, bottom: str) -> float | None:
    if top not in outcomes or bottom not in outcomes or outcomes[bottom].execution.images_per_s == 0:
        return None
    return outcomes[top].execution.images_per_s / outcomes[bottom].execution.images_per_s


def report(outcomes: list[Outcome], gpus: list[Gpu], args: argparse.Namespace, total_s: float) -> tuple[str, dict]:
    by_role = {o.case.role: o for o in outcomes}
    devices = sorted({d for o in outcomes for d in o.execution.peak_bytes} | {g.index for g in gpus})
    machine = ", ".join(sorted({f"{g.name}" for g in gpus})) or platform.processor() or platform.machine()
    lines = [
        f"# Inference strategies — {len(gpus)} × {machine if gpus else 'CPU (dry run: tiny preset)'}",
        "",
        (
            f"{dt.date.today().isoformat()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"accelerate {accelerate.__version__}, synthetic 584×565 images, batch {args.batch_size}, "
            f"bf16 on GPU; wall time {total_s:.0f} s."
        ),
        "",
        "| case | plan | images | images/s | GPU util % | peak GiB per GPU | zero-[SEG] maps |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for o in outcomes:
        util = " / ".join(f"{o.utilisation.get(d, 0):.0f}" for d in devices) if o.utilisation else "n/a"
        peak = " / ".join(f"{o.execution.peak_bytes.get(d, 0) / (1 << 30):.1f}" for d in devices) if gpus else "n/a"
        lines.append(
            f"| {o.case.name} | {o.plan.describe()} | {o.execution.images} | {o.execution.images_per_s:.2f} | {util} "
            f"| {peak} | {o.zero_seg} |"
        )
    if gpus:
        lines.append(
            f"\nGPU columns are GPUs {devices}; utilisation is nvidia-smi's mean over the timed part. The automatic "
            "choice gets as many images per copy as the one-GPU case (weak scaling)."
        )

    reference_role = "replicas" if args.dry_run else "auto"
    reference = by_role.get(reference_role)
    checks = {}
    spread = {}
    if reference is not None:
        pixels = np.concatenate([m.levels.ravel() for m in reference.maps.values()])
        mask = np.concatenate([m.mask_at(level(0.5)).ravel() for m in reference.maps.values()])
        spread = {"mask_share": float(np.mean(mask)), "sd": float(np.std(pixels))}
        lines += [
            "",
            f"## Same maps as `{reference.case.name}`",
            (
                f"Tolerance (bf16): at most {MAX_MASK_DISAGREEMENT:.0%} of mask pixels (p ≥ 0.5) differ and the mean "
                f"|Δp| is at most {MAX_MEAN_ABS_DIFF:g}/255. The reference maps have {spread['mask_share']:.1%} of "
                f"pixels at p ≥ 0.5 and a standard deviation of p of {spread['sd']:.1f}/255 (mask-head gain "
                f"{args.gains[reference.case.preset]:.3g})."
            ),
            "",
            "| case | identical images | max abs diff /255 | mean abs diff /255 | mask pixels differing | result |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for o in outcomes:
            # `auto` answers as the presets were trained (forced); a generated answer may place its [SEG] elsewhere.
            if o is reference or o.case.preset != reference.case.preset or o.case.config.mode == "generate":
                continue
            check = agreement(reference.maps, o.maps)
            checks[o.case.name] = check
            lines.append(
                f"| {o.case.name} | {check['identical_images']}/{check['images']} | {check['max_abs_diff']} | "
                f"{check['mean_abs_diff']:.3f} | {check['mask_disagreement']:.4%} | "
                f"{'PASS' if check['passed'] else 'FAIL'} |"
            )

    n = len(gpus)
    goals = [
        ("automatic choice ≥ 3.5 × baseline", ratio(by_role, "auto", "baseline"), 3.5),
        ("pipelined ≥ 2 × capped baseline", ratio(by_role, "pipelined", "capped_baseline"), 2.0),
        (
            f"replicas ≥ 0.9 × {n} × one GPU",
            None if "one_gpu" not in by_role else (ratio(by_role, "auto", "one_gpu") or 0) / max(n, 1),
            0.9,
        ),
        ("forced ≥ 3 × generate", ratio(by_role, "forced", "generate"), 3.0),
    ]
    lines += ["", "## Goals", "", "| goal | measured | result |", "|---|---:|---|"]
    for name, value, target in goals:
        measured = "n/a" if value is None else f"{value:.2f}"
        verdict = "n/a" if value is None else ("PASS" if value >= target else "FAIL")
        if args.dry_run:
            verdict = "(dry run: not a GPU measurement)"
        lines.append(f"| {name} | {measured} | {verdict} |")
    data = {
        "gpus": [g.model_dump() for g in gpus],
        "outcomes": [
            {
                "case": o.case.name,
                "role": o.case.role,
                "plan": o.plan.model_dump(),
                "images": o.execution.images,
                "seconds": o.execution.seconds,
                "images_per_s": o.execution.images_per_s,
                "load_s": o.execution.load_s,
                "peak_bytes": o.execution.peak_bytes,
                "utilisation": o.utilisation,
                "zero_seg": o.zero_seg,
            }
            for o in outcomes
        ],
        "agreement": checks,
        "reference_spread": spread,
        "mask_gains": args.gains,
        "goals": {name: value for name, value, _ in goals},
    }
    return "\n".join(lines) + "\n", data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny preset on the CPU")
    parser.add_argument("--images", type=int, help="images per case (default 64 on GPU, 8 in a dry run)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cap-gib", type=float, default=40.0, help="per-GPU memory cap of the capped cases")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="generate mode's longest answer")
    parser.add_argument("--only", help="comma-separated case roles to run (e.g. auto,one_gpu); default: all")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip optional cases past this wall time")
    args = parser.parse_args()
    args.images = args.images or (8 if args.dry_run else 64)

    gpus = [] if args.dry_run else visible_gpus()
    if not args.dry_run and len(gpus) < 2:
        sys.exit(f"needs 2 or more GPUs, found {len(gpus)}; use --dry-run on a CPU machine")
    gpus = gpus[:4]
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    ids = [f"synthetic{i:04d}" for i in range(args.images * max(1, len(gpus)))]
    images = SyntheticImages(*IMAGE_HW, seed=0).to_files(ids, Path(tempfile.mkdtemp(prefix="infer-gpu-")))
    tasks = make_tasks(ids, args.batch_size)
    per_case = -(-args.images // args.batch_size)

    sampler = GpuSampler(enabled=bool(gpus))
    selected = cases(len(gpus), args.dry_run, args.cap_gib, args.max_new_tokens)
    if args.only:
        selected = [c for c in selected if c.role in args.only.split(",")]
    started = time.perf_counter()
    args.gains = {
        preset: mask_gain(preset, gpus, images, tasks[0]) for preset in dict.fromkeys(c.preset for c in selected)
    }
    outcomes = []
    try:
        for case in selected:
            elapsed = time.perf_counter() - started
            if case.optional and elapsed > args.budget_s * 0.8:
                print(f"\n== skipped {case.name}: {elapsed:.0f} s elapsed of a {args.budget_s:.0f} s budget")
                continue
            outcomes.append(run_case(case, gpus, images, tasks, per_case, sampler, args.gains[case.preset]))
    finally:
        sampler.stop()
    table, data = report(outcomes, gpus, args, time.perf_counter() - started)
    print("\n" + table)
    if out := os.environ.get("OUT"):
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "infer_gpu.md"), "w") as handle:
            handle.write(table)
        with open(os.path.join(out, "infer_gpu.json"), "w") as handle:
            json.dump(data, handle, indent=2, default=str)


if __name__ == "__main__":
    main()

"""Where one training step's time goes, on one GPU: each part's forward, the backward, the optimizer step.

    torchrun --standalone --nproc-per-node 1 benchmarks/train_profile.py [--preset sa2va-4b] [--micro-batch 8]
        [--compile encoders_and_llm] [--kernels 15 [--trace step.json]]
    python benchmarks/train_profile.py --preset tiny --micro-batch 2     # on the CPU (gloo, fp32)

The workload is benchmarks/train_gpu.py's (same model, batch, DeepSpeed ZeRO-2 engine). Each part's forward is
timed between CUDA events recorded by hooks on its module, so a part's time is its span on the GPU's stream,
including any gap in which the GPU waited for the CPU to launch its kernels. Each part's forward FLOPs come from
torch's FlopCounterMode per module, so the table shows which part keeps the step far from the matmul peak.
Backward and the optimizer step are timed as wholes (autograd runs parts' backward interleaved with nothing
to hook cleanly). With --kernels N, torch.profiler times two more steps: per phase, the time the GPU ran any kernel
against the phase's wall time (where the GPU waited on the CPU) and the kernel time by family (matmul, attention,
Inductor's Triton kernels, NCCL, the rest), then the N CUDA kernels with the most time.

--compile compiles the frozen image encoders (InternViT and SAM2's Hiera), and with `encoders_and_llm` each LLM
decoder layer too, as FinetuneConfig.torch_compile does. The part timer's hooks run eagerly and so break the
compiled SAM2 graph at its encoder's boundaries, where every encoder output becomes a graph output: the outputs the
model never reads, which a real run's graph drops (about 2 % of an sa2va-4b step), are computed here. Time whole
steps with train_gpu.py.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_gpu import PEAK_TFLOPS, SWITCH, eager_attention, make_engine, model_and_batch, train_step  # noqa: E402

# The parts a step runs, in order. The LLM's decoder is found through get_decoder(): under LoRA it sits inside
# peft's wrappers, whose own forward the model never calls.
PARTS: dict[str, Callable[[Any], torch.nn.Module | None]] = {
    "ViT (frozen)": lambda m: m.vision_model,
    "projector mlp1": lambda m: m.mlp1,
    "LLM decoder (LoRA)": lambda m: m.language_model.get_decoder(),
    "text_hidden_fcs": lambda m: m.text_hidden_fcs,
    "SAM2 image encoder (frozen)": lambda m: m.grounding_encoder.vision_encoder,
    "SAM2 prompt encoder": lambda m: m.grounding_encoder.prompt_encoder,
    "SAM2 mask decoder": lambda m: m.grounding_encoder.mask_decoder,
    "mask refiner": lambda m: m.mask_refiner,
}


class PartTimer:
    """CUDA events around each part's forward; on the CPU, wall time."""

    def __init__(self, model: torch.nn.Module, on_gpu: bool) -> None:
        self.on_gpu = on_gpu
        self.spans: dict[str, list[tuple[object, object]]] = defaultdict(list)
        self._open: dict[str, object] = {}
        self.handles = []
        for name, find in PARTS.items():
            module = find(model)
            if module is None:
                continue
            self.handles.append(module.register_forward_pre_hook(lambda *_, n=name: self._start(n)))
            self.handles.append(module.register_forward_hook(lambda *_, n=name: self._stop(n)))

    @torch.compiler.disable  # a compiled encoder runs its hooks eagerly, so the events are really recorded
    def _mark(self) -> object:
        if not self.on_gpu:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _start(self, name: str) -> None:
        self._open[name] = self._mark()

    def _stop(self, name: str) -> None:
        self.spans[name].append((self._open.pop(name), self._mark()))

    def milliseconds(self) -> dict[str, float]:
        """Total milliseconds per part since the last call, then forgets them."""
        totals = {}
        for name, spans in self.spans.items():
            if self.on_gpu:
                totals[name] = sum(start.elapsed_time(end) for start, end in spans)
            else:
                totals[name] = sum(end - start for start, end in spans) * 1e3
        self.spans.clear()
        return totals


PROFILED_STEPS = 2
PHASES = ("forward", "backward", "optimizer step")
# Kernel families by name: cuBLAS/CUTLASS matmuls, fused attention, Inductor's generated kernels, NCCL.
KERNEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "attention": ("flash", "fmha", "attention"),
    "matmul": ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas"),
    "Triton (compiled)": ("triton_",),
    "NCCL": ("nccl",),
}


def kernel_family(name: str) -> str:
    lowered = name.lower()
    for family, markers in KERNEL_FAMILIES.items():
        if any(marker in lowered for marker in markers):
            return family
    return "other (eager element-wise, copies)"


def busy_ns(intervals: list[tuple[int, int]]) -> int:
    """Length of the union of (start, end) intervals: the time at least one kernel ran."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += end - start
            reach = end
        elif end > reach:
            total += end - reach
            reach = end
    return total


def print_phase_kernels(events) -> None:
    """Per phase: its wall time, the time the GPU ran any kernel, and the kernel time by family. Where busy is
    far below wall, the GPU waited on the CPU (launches, Python hooks); where it is close, the kernels are slow."""
    from torch.autograd import DeviceType

    spans = {name: [] for name in PHASES}
    kernels = []
    for event in events:
        if event.device_type() == DeviceType.CPU and event.is_user_annotation() and event.name() in spans:
            spans[event.name()].append((event.start_ns(), event.end_ns()))
        elif event.device_type() == DeviceType.CUDA and not event.is_user_annotation():
            kernels.append((event.start_ns(), event.end_ns(), kernel_family(event.name())))
    families = [*KERNEL_FAMILIES, kernel_family("")]
    print(f"\nGPU time by phase, ms per step ({PROFILED_STEPS} profiled steps):")
    print("| phase | wall | GPU busy | busy % | " + " | ".join(families) + " |")
    print("|---" * (4 + len(families)) + "|")
    for name, ranges in spans.items():
        inside = [k for k in kernels if any(a <= k[0] < b for a, b in ranges)]
        wall = sum(b - a for a, b in ranges) / PROFILED_STEPS / 1e6
        busy = busy_ns([(a, b) for a, b, _ in inside]) / PROFILED_STEPS / 1e6
        by_family = [sum(b - a for a, b, f in inside if f == family) / PROFILED_STEPS / 1e6 for family in families]
        share = 100 * busy / wall if wall else 0.0
        cells = " | ".join(f"{ms:.1f}" for ms in by_family)
        print(f"| {name} | {wall:.1f} | {busy:.1f} | {share:.0f} | {cells} |")


def phased_step(engine, batch, sync: Callable[[], None], spent: dict[str, float]) -> None:
    """One step, the device synchronised after each phase, whose wall milliseconds are added to `spent`. Each phase
    is also a profiler range: with the sync inside it, every kernel of a phase lies within the range's CPU span."""
    from torch.profiler import record_function

    def run(name: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        with record_function(name):
            result = action()
            sync()
        spent[name] += (time.perf_counter() - started) * 1e3
        return result

    output = run("forward", lambda: engine(**batch))
    run("backward", lambda: engine.backward(output.loss))
    run("optimizer step", engine.step)


def part_flops(model: torch.nn.Module, batch) -> dict[str, float]:
    """Forward FLOPs of one micro-batch per part, by torch's counter (eager attention, as train_gpu counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    with eager_attention(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**batch)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    paths = {id(module): f"{root}.{path}" for path, module in model.named_modules() if path}
    result = {name: float(sum(counts.get(paths.get(id(find(model))), {}).values())) for name, find in PARTS.items()}
    result["total"] = float(sum(counts.get(root, {}).values()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sa2va-4b")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--tiles", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--compile", choices=["off", "encoders", "encoders_and_llm"], default="off")
    parser.add_argument(
        "--fused-adam", choices=list(SWITCH), default="auto",
        help="FinetuneConfig.fused_adam (auto: fused on GPUs): torch's AdamW as one fused kernel or multi-tensor",
    )  # fmt: skip
    parser.add_argument(
        "--fused-gelu", choices=list(SWITCH), default="auto",
        help="FinetuneConfig.fused_encoder_gelu (auto: on GPUs): GELU in the encoders' first MLP matmul",
    )  # fmt: skip
    parser.add_argument("--kernels", type=int, default=0, help="list the top N CUDA kernels (torch.profiler)")
    parser.add_argument("--trace", type=Path, help="with --kernels: also write the profiled steps' Chrome trace here")
    parser.add_argument(
        "--python-profile", type=int, default=0, metavar="N",
        help="list the N Python functions with the most cumulative time over the timed steps (cProfile)",
    )  # fmt: skip
    args = parser.parse_args()

    import deepspeed

    from vesselseg.finetune.launch import quiet_libraries

    on_gpu = torch.cuda.is_available()
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", "29517")
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    quiet_libraries()
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    dtype = torch.bfloat16 if on_gpu else torch.float32

    model, batch = model_and_batch(args.preset, args.micro_batch, args.tiles, device, dtype, seed=0)
    flops = part_flops(model, batch)
    engine = make_engine(
        model, args.preset, 2, 1, on_gpu, args.warmup + args.steps, args.micro_batch, args.compile,
        fused_adam=SWITCH[args.fused_adam], fused_gelu=SWITCH[args.fused_gelu],
    )  # fmt: skip
    timer = PartTimer(model, on_gpu)

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        train_step(engine, batch)
    sync()
    timer.milliseconds()
    phase = dict.fromkeys(PHASES, 0.0)
    profiler = cProfile.Profile() if args.python_profile else None
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    for _ in range(args.steps):
        phased_step(engine, batch, sync, phase)
    step_ms = (time.perf_counter() - started) * 1e3 / args.steps
    if profiler:
        profiler.disable()
    parts = {name: ms / args.steps for name, ms in timer.milliseconds().items()}

    device_name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
    print(
        f"\n{args.preset}, micro-batch {args.micro_batch}, {args.tiles} tile(s), ZeRO-2, 1 × {device_name}, "
        f"torch.compile {args.compile}, fused encoder GELU {args.fused_gelu}; {args.steps} steps after {args.warmup}"
    )
    print(f"step {step_ms:.0f} ms = " + ", ".join(f"{k} {v / args.steps:.0f} ms" for k, v in phase.items()))
    print("\n| part | forward ms | forward GFLOP | TFLOP/s | % of peak |\n|---|---|---|---|---|")
    for name in PARTS:
        if name not in parts:
            continue
        ms, gflop = parts[name], flops[name] / 1e9
        rate = gflop / ms if ms else 0.0
        print(f"| {name} | {ms:.1f} | {gflop:,.0f} | {rate:.0f} | {100 * rate / PEAK_TFLOPS:.0f} |")
    rest = phase["forward"] / args.steps - sum(parts.values())
    rest_gflop = (flops["total"] - sum(flops[n] for n in parts)) / 1e9
    print(f"| rest of forward (embeddings, losses, glue) | {rest:.1f} | {rest_gflop:,.0f} | | |")

    if profiler:
        print(f"\nTop {args.python_profile} Python functions by cumulative time over {args.steps} steps:")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.python_profile)
    if args.kernels and on_gpu:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(PROFILED_STEPS):
                phased_step(engine, batch, sync, dict.fromkeys(PHASES, 0.0))
        print_phase_kernels(prof.profiler.kineto_results.events())
        if args.trace:
            prof.export_chrome_trace(str(args.trace))
        print(f"\nTop {args.kernels} CUDA kernels over {PROFILED_STEPS} steps:")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.kernels, max_name_column_width=70))
    for handle in timer.handles:
        handle.remove()


if __name__ == "__main__":
    main()

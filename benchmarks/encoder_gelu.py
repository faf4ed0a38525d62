"""The frozen image encoders with GELU as its own pass vs inside the first MLP matmul (vesselseg.model.fused_gelu).

    python benchmarks/encoder_gelu.py [--preset sa2va-4b] [--batch 16] [--rounds 5] [--iterations 10]
    python benchmarks/encoder_gelu.py --preset tiny --batch 2 --rounds 1 --iterations 2   # on the CPU

Three copies of the preset's random-weight model: exact GELU and fused GELU in the run's dtype (bf16 on GPUs), each
compiled as `compile_blocks` compiles them, and an fp32 eager copy with exact GELU as the reference. Time: each
encoder's forward under no_grad (InternViT on `--batch` 448-px tiles, SAM2's `get_sam2_features` on `--batch`
images at SAM2's size), the two variants alternating for `--rounds` rounds of `--iterations` calls, median per
call. Numerics: both variants' outputs on one batch against the fp32 reference (relative L2 error of all outputs
and their largest absolute error); the exact variant's error is the run dtype's own rounding, the floor the fused
one is compared with.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402
from train_gpu import PEAK_TFLOPS, build_model  # noqa: E402

Encoder = Callable[[torch.nn.Module, torch.Tensor], list[torch.Tensor]]
# Each encoder's input side (from the model's config) and its call.
ENCODERS: dict[str, tuple[str, Encoder]] = {
    "InternViT": ("tile_size", lambda m, x: [m.vision_model(pixel_values=x).last_hidden_state]),
    "SAM2 image encoder": ("sam2_image_size", lambda m, x: m.get_sam2_features(x)),
}


def timed(call: Callable[[], object], iterations: int, on_gpu: bool) -> float:
    """Milliseconds per call over `iterations` calls."""
    if on_gpu:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iterations):
        call()
    if on_gpu:
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1e3 / iterations


def error(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> tuple[float, float]:
    """(relative L2 error over all outputs, largest absolute error) against the fp32 reference."""
    got = torch.cat([o.float().flatten() for o in outputs])
    want = torch.cat([r.flatten() for r in reference])
    return float((got - want).norm() / want.norm()), float((got - want).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sa2va-4b")
    parser.add_argument("--batch", type=int, default=16, help="tiles (InternViT) and images (SAM2) per call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=10, help="calls per round and variant")
    args = parser.parse_args()

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    dtype = torch.bfloat16 if on_gpu else torch.float32
    exact, _ = build_model(args.preset, device, dtype, seed=0)
    exact.eval()
    fused = copy.deepcopy(exact)
    swapped = fused.fuse_encoder_gelu()
    reference = copy.deepcopy(exact).float()
    generator = torch.Generator().manual_seed(0)

    print(describe())
    print(f"{args.preset}, {dtype}, batch {args.batch}, {swapped} MLPs fused, {args.rounds} × {args.iterations} calls")
    rows = []
    for name, (size_field, encoder) in ENCODERS.items():
        side = getattr(exact.config, size_field)
        pixels = torch.randn(args.batch, 3, side, side, generator=generator).to(device)
        inputs = pixels.to(dtype)
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                encoder(exact, inputs)
            want = encoder(reference, pixels)
            variants = {}
            for label, model in (("exact", exact), ("fused", fused)):
                compiled = torch.compile(lambda x, m=model, e=encoder: e(m, x), dynamic=False)
                started = time.perf_counter()
                outputs = compiled(inputs)
                print(f"{name}, {label}: compiled in {time.perf_counter() - started:.0f} s", flush=True)
                variants[label] = (compiled, error(outputs, want))
            times: dict[str, list[float]] = {label: [] for label in variants}
            for _ in range(args.rounds):
                for label, (compiled, _) in variants.items():
                    times[label].append(timed(lambda c=compiled, x=inputs: c(x), args.iterations, on_gpu))
        for label, (_, (relative, largest)) in variants.items():
            ms = statistics.median(times[label])
            rows.append((name, label, ms, counter.get_total_flops() / ms / 1e9, relative, largest))

    print("\n| encoder | GELU | ms per call | TFLOP/s | % of 790 | rel. L2 error vs fp32 | max abs error |")
    print("|---|---|---|---|---|---|---|")
    for name, label, ms, tflops, relative, largest in rows:
        print(
            f"| {name} | {label} | {ms:.2f} | {tflops:.0f} | {100 * tflops / PEAK_TFLOPS:.1f} | {relative:.2e} | "
            f"{largest:.2e} |"
        )


if __name__ == "__main__":
    main()

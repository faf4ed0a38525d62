"""Per-GPU memory before activations for the Sa2VA presets under ZeRO-2 and ZeRO-3 (vesselseg/finetune/memory_plan.py).

    python benchmarks/memory_plan.py                               sa2va-1b/4b/8b/26b on 1-8 H100s (79.6 GiB)
    python benchmarks/memory_plan.py --presets sa2va-26b --gpu-gib 140.4 --activation-gib 4.1

The parameter counts come from the presets built on the meta device with the training recipe applied (LoRA r=128 on
the LLM, full embedding and head copies, trained projector, mask decoder and text_hidden_fcs), so nothing is
allocated. With --activation-gib (activation memory per sample, measured: benchmarks/results/memory_plan.md) the
table also gives the largest micro-batch the rest of the GPU holds.

    torchrun --nproc-per-node 2 benchmarks/memory_plan.py --check --presets tiny --zero 3

checks the plan against DeepSpeed itself: it builds the preset, initializes it through the finetune stage's own
engine set-up, trains one step and compares the weights and optimizer partitions each rank holds with the plan's
(on GPUs also the memory allocated after the step, and the peak during it).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from pathlib import Path

import torch

from vesselseg.finetune.base_model import load_base_model
from vesselseg.finetune.memory_plan import GIB, ParameterCount, plan
from vesselseg.model import apply_training_recipe

H100_GIB = 81559 / 1024  # nvidia-smi's total on the H100 80GB HBM3 cards measured here


def count(preset: str) -> ParameterCount:
    model, _ = load_base_model(f"preset:{preset}", device="meta", dtype=torch.bfloat16)
    return ParameterCount.of(apply_training_recipe(model))


def resident_elements(engine) -> tuple[int, int]:
    """(weights, fp32 master elements) this rank holds after a step; a ZeRO-3 parameter keeps only its partition,
    `ds_tensor`."""
    weights = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in engine.module.parameters())
    # torch's AdamW over DeepSpeed's flat fp32 partitions: two moments per master element. (ZeRO-3 swaps its flat
    # partitions out of the param groups between steps, so the moments are what can be counted for both stages.)
    state = engine.optimizer.optimizer.state.values()
    master = sum(v.numel() for moments in state for v in moments.values() if v.dim() > 0) // 2
    return weights, master


def build(preset: str, llm_layers: int | None, device: torch.device, dtype: torch.dtype):
    """The preset with the training recipe, optionally with fewer LLM layers (to measure activations per layer of
    a model whose whole does not fit), and its tokenizer."""
    from vesselseg.model.presets import PRESETS

    overrides = {}
    if llm_layers:
        text = PRESETS[preset]()["text_config"]
        text.num_hidden_layers = llm_layers
        overrides["text_config"] = text
    torch.manual_seed(0)
    model, processor = load_base_model(f"preset:{preset}", overrides=overrides, device=device, dtype=dtype)
    return apply_training_recipe(model), processor.tokenizer


def check(preset: str, zero_stage: int, micro_batches: list[int], llm_layers: int | None) -> None:
    import deepspeed
    import torch.distributed as dist

    sys.path.insert(0, str(Path(__file__).parent))
    from train_gpu import make_batch, make_engine, train_step

    on_gpu = torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    world, rank = dist.get_world_size(), dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    model, tokenizer = build(preset, llm_layers, device, dtype)
    counted = ParameterCount.of(model)
    name = f"{preset}{f' ({llm_layers} LLM layers)' if llm_layers else ''}"
    engine = make_engine(model, preset, zero_stage, world, on_gpu, 1 + len(micro_batches), micro_batches[0], "off")
    # One step first, so that the optimizer state exists; then one step per micro-batch size, each with its peak.
    train_step(engine, make_batch(model, tokenizer, micro_batches[0], 1, device, dtype, seed=0))
    weights, master = resident_elements(engine)
    expected = plan(counted, zero_stage, world)
    print(
        f"rank {rank}: {name} ZeRO-{zero_stage} on {world}: weights {weights:,} (plan "
        f"{expected.weight_elements:,.0f}), fp32 master {master:,} (plan {expected.master_elements:,.0f})",
        flush=True,
    )
    for label, found, planned in (
        ("weights", weights, expected.weight_elements),
        ("master", master, expected.master_elements),
    ):
        # ZeRO pads each flat partition to an alignment boundary: a fraction of a percent on these models.
        if abs(found - planned) > 0.01 * planned:
            raise SystemExit(f"rank {rank}: {label} {found:,} elements differ from the plan's {planned:,.0f} by > 1 %")
    if not on_gpu:
        return
    for micro_batch in micro_batches:
        batch = make_batch(model, tokenizer, micro_batch, 1, device, dtype, seed=0)
        before = torch.cuda.memory_allocated(device) / GIB
        torch.cuda.reset_peak_memory_stats(device)
        train_step(engine, batch)
        peak = torch.cuda.max_memory_allocated(device) / GIB
        free, total = (b / GIB for b in torch.cuda.mem_get_info(device))
        outside = total - free - torch.cuda.memory_reserved(device) / GIB  # CUDA context, NCCL, cuBLAS workspaces
        print(
            f"rank {rank}: {name} micro-batch {micro_batch}: allocated between steps {before:.2f} GiB (plan static "
            f"{expected.static_gib:.2f}), peak {peak:.2f} GiB, step above the static {peak - before:.2f} GiB, "
            f"outside torch's allocator {outside:.2f} GiB",
            flush=True,
        )
        del batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="sa2va-1b,sa2va-4b,sa2va-8b,sa2va-26b")
    parser.add_argument("--gpus", default="1,2,4,8", help="GPU counts")
    parser.add_argument("--gpu-gib", type=float, default=H100_GIB, help="memory of one GPU in GiB")
    parser.add_argument("--activation-gib", type=float, help="activation GiB per sample, for the micro-batch column")
    parser.add_argument("--check", action="store_true", help="one rank of the check against DeepSpeed (torchrun)")
    parser.add_argument("--zero", type=int, choices=(2, 3), default=2, help="ZeRO stage of --check")
    parser.add_argument("--micro-batches", default="1", help="--check: micro-batch sizes, one step each (GPU peaks)")
    parser.add_argument("--llm-layers", type=int, help="--check: build the preset with this many LLM layers")
    args = parser.parse_args()
    if args.check:
        check(args.presets, args.zero, [int(m) for m in args.micro_batches.split(",")], args.llm_layers)
        return

    print(f"# memory plan, {args.gpu_gib:.1f} GiB per GPU (computed on {platform.node() or 'this machine'})\n")
    print("| preset | trained / frozen params | ZeRO | GPUs | weights | optimizer | gradients | static GiB | left GiB"
          + (" | micro-batch that fits |" if args.activation_gib else " |"))  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if args.activation_gib else ""))
    for preset in args.presets.split(","):
        counted = count(preset)
        for stage in (2, 3):
            for gpus in (int(g) for g in args.gpus.split(",")):
                chosen = plan(counted, stage, gpus)
                left = chosen.activation_budget_gib(args.gpu_gib)
                row = (
                    f"| {preset} | {counted.trained / 1e9:.2f} B / {counted.frozen / 1e9:.2f} B | {stage} | {gpus} | "
                    f"{chosen.weights_gib:.1f} | {chosen.optimizer_gib:.1f} | {chosen.gradients_gib:.1f} | "
                    f"{chosen.static_gib:.1f} | {left:.1f} |"
                )
                if args.activation_gib:
                    row += f" {max(0, math.floor(left / args.activation_gib)) if left > 0 else 'does not fit'} |"
                print(row)


if __name__ == "__main__":
    main()

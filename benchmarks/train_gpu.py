"""Training throughput of Sa2VA presets under DeepSpeed ZeRO-2 and ZeRO-3 on 1, 2, 4, … GPUs.

    benchmarks/train_gpu.sh                   every GPU count up to the GPUs present, then the table
    python benchmarks/train_gpu.py --dry-run  the same path on the CPU: tiny preset, gloo, fp32, 1 and 2 ranks

Workload: random weights (`sa2va-1b`, `sa2va-4b` with Sa2VA's recipe: LoRA r=128 on the frozen LLM, full
`embed_tokens`/`lm_head` copies, frozen ViT and SAM2 encoder, trained projector, mask decoder and
`text_hidden_fcs`), bf16, DeepSpeed with torch's AdamW (no JIT-built op: see vesselseg/finetune/engine.py), no
activation checkpointing unless --checkpointing. One sample = one fundus image as Sa2VA sees it: `--tiles` 448-px
InternVL tiles (default 1: a DRIVE-sized image gets one tile, 256 image tokens), a prompt and answer of random
token ids around them, one [SEG], the image at SAM2's 1024 px, and a 584×565 target mask (full-resolution loss for
the presets that use it). The micro-batch per GPU is fixed, so N GPUs do N times the work of one (weak scaling).
--accumulation K runs K micro-batches per optimizer step (a real run's global batch is larger than one micro-batch
per GPU), so the optimizer step and gradient reduction are paid once per K; --compile compiles parts of the model
as FinetuneConfig.torch_compile does. Both settings are printed in the table's header.

Model FLOPs, counted by torch.utils.flop_counter.FlopCounterMode over one real forward and backward of the bare
module (before DeepSpeed wraps it, no activation checkpointing, so nothing is counted twice):

    F_step = Σ_parts F_fwd(part)                                  every part runs forward: ViT, mlp1, LLM,
                                                                  SAM2 image encoder, prompt encoder, mask decoder
           + Σ_{parts gradients pass through} F_act_grad(part)    ≈ F_fwd of their matmuls: the LLM (frozen, but
                                                                  LoRA and mlp1 below it need its activation
                                                                  gradients), mask decoder, text_hidden_fcs
           + Σ_{trained weights} F_weight_grad(weight)            ≈ F_fwd of those matmuls: LoRA, lm_head rows
                                                                  of supervised tokens, mlp1, decoder, fcs
The counter sees only the kernels autograd actually runs, so frozen parts below every trained weight (ViT, SAM2
image encoder) add no backward FLOPs and frozen weights add no weight-gradient FLOPs. Attention counts Q·K and
P·V (4·s²·d per head forward, flash/SDPA backward 2.5× that as torch counts it). Reported TFLOP/s per GPU =
F_step × samples / step time / GPUs, against the ~790 TFLOP/s dense bf16 matmul peak measured on these H100s.
Scaling efficiency(N) = samples/s on N GPUs ÷ (N × samples/s on 1 GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

PEAK_TFLOPS = 790.0
Flops = tuple[float, float]  # forward, forward + backward
MASK_SIZE = (584, 565)
PROMPT_TOKENS, ANSWER_TOKENS = 24, 6


def build_model(preset: str, device: torch.device, dtype: torch.dtype, seed: int):
    """The preset with random weights and Sa2VA's training recipe, built as the finetune stage builds it, and its
    tokenizer."""
    from vesselseg.finetune.base_model import load_base_model
    from vesselseg.model import apply_training_recipe

    torch.manual_seed(seed)
    model, processor = load_base_model(f"preset:{preset}", device=device, dtype=dtype)
    return apply_training_recipe(model), processor.tokenizer


def make_batch(model, tokenizer, samples: int, tiles: int, device: torch.device, dtype: torch.dtype, seed: int):
    """`samples` identical fundus-image samples (prompt, image tokens, answer with one [SEG], target mask)."""
    from vesselseg.model import Sa2VABatch
    from vesselseg.model.modeling import IGNORE_INDEX

    config = model.config
    generator = torch.Generator().manual_seed(seed)
    specials = len(tokenizer)  # ids below this are the tiny tokenizer's; any id above is a plain word piece
    vocab = config.text_config.vocab_size
    image_tokens = tiles * config.tokens_per_tile
    start, end = tokenizer.convert_tokens_to_ids(["<img>", "</img>"])

    def words(n: int) -> list[int]:
        return torch.randint(min(specials, vocab - 1), vocab, (n,), generator=generator).tolist()

    prompt = words(PROMPT_TOKENS) + [start] + [config.image_token_id] * image_tokens + [end] + words(8)
    answer = words(ANSWER_TOKENS - 2) + [config.seg_token_id] + words(1)
    ids = torch.tensor([prompt + answer] * samples)
    labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + answer] * samples)
    tile, sam = config.tile_size, config.sam2_image_size
    return Sa2VABatch(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=torch.randn(samples * tiles, 3, tile, tile, generator=generator),
        sam2_pixel_values=torch.randn(samples, 3, sam, sam, generator=generator),
        labels=labels,
        gt_masks=[(torch.rand(1, *MASK_SIZE, generator=generator) < 0.1).float() for _ in range(samples)],
    ).to(device, dtype)


def model_and_batch(preset: str, micro_batch: int, tiles: int, device: torch.device, dtype: torch.dtype, seed: int):
    model, tokenizer = build_model(preset, device, dtype, seed)
    return model, make_batch(model, tokenizer, micro_batch, tiles, device, dtype, seed)


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Every part's attention in its eager form (plain matmuls) inside the block, the configured kernel after it:
    torch's SDPA FLOP formula rejects grouped-query shapes (Qwen2.5, InternLM2.5), so counting needs the eager form."""
    configs = {
        id(m.config): m.config for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")
    }
    previous = {key: config._attn_implementation for key, config in configs.items()}
    for config in configs.values():
        config._attn_implementation = "eager"
    try:
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = previous[key]


def count_flops(model, batch) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one micro-batch, as executed."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with eager_attention(model):
        with FlopCounterMode(display=False) as forward_counter:
            output = model(**batch)
        with FlopCounterMode(display=False) as backward_counter:
            output.loss.backward()
    model.zero_grad(set_to_none=True)
    forward = float(forward_counter.get_total_flops())
    return forward, forward + float(backward_counter.get_total_flops())


def flops_of_micro_batch(preset: str, tiles: int, device: torch.device, dtype: torch.dtype) -> Callable[[int], Flops]:
    """(forward, forward + backward) FLOPs of a micro-batch of n samples, as a function of n.

    Counted on batches of one and two samples and extended linearly (a small part, such as SAM2's positional
    map, is computed once per batch; the rest is per sample): counting a whole micro-batch in eager attention
    (below) needs memory a large one does not have (sa2va-4b at 16 samples ran out on an 80 GB H100).
    """
    model, tokenizer = build_model(preset, device, dtype, seed=0)
    one, two = (count_flops(model, make_batch(model, tokenizer, n, tiles, device, dtype, seed=0)) for n in (1, 2))
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return lambda n: tuple(a + (n - 1) * (b - a) for a, b in zip(one, two, strict=True))


def train_step(engine, batch, accumulation: int = 1) -> None:
    """One optimizer step: `accumulation` micro-batches (DeepSpeed steps the optimizer after the last)."""
    for _ in range(accumulation):
        output = engine(**batch)
        engine.backward(output.loss)
        engine.step()


def make_engine(
    model, preset: str, zero_stage: int, world: int, on_gpu: bool, steps: int, micro_batch: int, compile_setting: str,
    accumulation: int = 1, fused_adam: bool | None = None, fused_gelu: bool | None = None, checkpointing: bool = False,
):  # fmt: skip
    """The DeepSpeed engine the training benchmarks time, through the finetune stage's own config and initialize,
    which prepare the model as a run would (checkpointing, fused encoder GELU, compiled blocks)."""
    from vesselseg.finetune.config import FinetuneConfig
    from vesselseg.finetune.engine import initialize

    config = FinetuneConfig(
        base_model=f"preset:{preset}",
        steps=steps,
        micro_batch_size=micro_batch,
        global_batch_size=micro_batch * world * accumulation,
        zero_stage=zero_stage,
        lr=4e-5,
        precision="bf16" if on_gpu else "fp32",
        fused_adam=fused_adam,
        fused_encoder_gelu=fused_gelu,
        activation_checkpointing=checkpointing,
        torch_compile=compile_setting,
    )
    return initialize(model, config, world, config.resolve_precision(on_gpu), on_gpu)


# --fused-adam / --fused-gelu: FinetuneConfig's null, true, false
SWITCH = {"auto": None, "on": True, "off": False}


def measure(
    preset: str,
    zero_stage: int,
    args: argparse.Namespace,
    device: torch.device,
    flops: dict[str, Callable[[int], Flops]],
) -> dict | None:
    """One configuration; `flops` caches each preset's count, which does not depend on the ZeRO stage.
    The count runs on a model without activation checkpointing, which would count recomputation."""
    import torch.distributed as dist

    from vesselseg.finetune.config import gpu_default

    world, rank = dist.get_world_size(), dist.get_rank()
    on_gpu = device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    if preset not in flops:
        flops[preset] = flops_of_micro_batch(preset, args.tiles, device, dtype)
    forward_flops, step_flops = flops[preset](args.micro_batch)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    built = time.perf_counter()
    model, batch = model_and_batch(preset, args.micro_batch, args.tiles, device, dtype, seed=0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    engine = make_engine(
        model, preset, zero_stage, world, on_gpu, args.warmup + args.steps, args.micro_batch, args.compile,
        accumulation=args.accumulation, fused_gelu=SWITCH[args.fused_gelu], checkpointing=args.checkpointing,
    )  # fmt: skip
    setup_s = time.perf_counter() - built

    for _ in range(args.warmup):
        train_step(engine, batch, args.accumulation)
    if on_gpu:
        torch.cuda.synchronize(device)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(args.steps):
        train_step(engine, batch, args.accumulation)
    if on_gpu:
        torch.cuda.synchronize(device)
    seconds = torch.tensor([time.perf_counter() - started], device=device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    memory = torch.tensor([torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else 0.0], device=device)
    dist.all_reduce(memory, op=dist.ReduceOp.MAX)
    step_s = float(seconds.item()) / args.steps
    tokens = batch.attention_mask.numel() * args.accumulation  # per rank and optimizer step
    samples = args.micro_batch * args.accumulation
    engine.destroy()
    del engine, model, batch
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    if rank != 0:
        return None
    return {
        "preset": preset,
        "zero_stage": zero_stage,
        "gpus": world,
        "device": torch.cuda.get_device_name(device) if on_gpu else platform.processor() or "cpu",
        "precision": "bf16" if on_gpu else "fp32",
        "micro_batch": args.micro_batch,
        "accumulation": args.accumulation,
        "compile": args.compile,
        "fused_gelu": "on" if gpu_default(SWITCH[args.fused_gelu], on_gpu) else "off",
        "tiles": args.tiles,
        "tokens_per_sample": tokens // samples,
        "checkpointing": args.checkpointing,
        "step_ms": step_s * 1e3,
        "samples_per_s": samples * world / step_s,
        "tokens_per_s": tokens * world / step_s,
        "forward_gflop_per_sample": forward_flops / args.micro_batch / 1e9,
        "step_gflop_per_sample": step_flops / args.micro_batch / 1e9,
        "tflops_per_gpu": step_flops * args.accumulation / step_s / 1e12,
        "peak_memory_gb": float(memory.item()),
        "trainable_params": trainable,
        "setup_s": setup_s,
    }


def worker(args: argparse.Namespace) -> None:
    import deepspeed
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available()
    from vesselseg.finetune.launch import quiet_libraries

    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    quiet_libraries()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    flops: dict[str, Callable[[int], Flops]] = {}
    for preset in args.presets.split(","):
        for zero_stage in (int(s) for s in args.zero.split(",")):
            row = measure(preset, zero_stage, args, device, flops)
            if row is not None:
                print(
                    f"{preset} ZeRO-{zero_stage} {row['gpus']} GPU(s): {row['step_ms']:.0f} ms/step, "
                    f"{row['samples_per_s']:.1f} samples/s, {row['tflops_per_gpu']:.3g} TFLOP/s/GPU, "
                    f"{row['peak_memory_gb']:.1f} GB (set-up {row['setup_s']:.0f} s)",
                    flush=True,
                )
                with open(args.results, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
            dist.barrier()


def table(rows: list[dict]) -> str:
    def setting(r: dict) -> tuple:
        return r["preset"], r["zero_stage"], r.get("compile", "off")

    rows = sorted(rows, key=lambda r: (*setting(r), r["gpus"]))
    # One decimal in "% of 790": the goal sits at 40 % and two significant digits would round 39.6 up to it.
    single = {setting(r): r["samples_per_s"] for r in rows if r["gpus"] == 1}
    first = rows[0]
    lines = [
        f"Training throughput, {first['device']}, {first['precision']}, micro-batch {first['micro_batch']} per GPU × "
        f"{first.get('accumulation', 1)} accumulated per optimizer step, {first['tiles']} tile(s) = "
        f"{first['tokens_per_sample']} tokens per sample, activation checkpointing "
        f"{'on' if first['checkpointing'] else 'off'}, fused encoder GELU {first.get('fused_gelu', 'off')}; "
        f"{dt.date.today().isoformat()}, host {platform.node()}",
        "",
        "| preset | ZeRO | torch.compile | GPUs | ms/step | samples/s | tokens/s | model TFLOP/s per GPU | % of 790 "
        "| peak GB | scaling vs 1 GPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = single.get(setting(r))
        scaling = f"{100 * r['samples_per_s'] / (r['gpus'] * base):.0f}%" if base else "–"
        lines.append(
            f"| {r['preset']} | {r['zero_stage']} | {r.get('compile', 'off')} | {r['gpus']} | {r['step_ms']:.0f} | "
            f"{r['samples_per_s']:.1f} | "
            f"{r['tokens_per_s']:,.0f} | {r['tflops_per_gpu']:.3g} | {100 * r['tflops_per_gpu'] / PEAK_TFLOPS:.1f} | "
            f"{r['peak_memory_gb']:.1f} | {scaling} |"
        )
    lines += ["", "Model GFLOP per sample (FlopCounterMode, see the script's docstring):", ""]
    lines += ["| preset | forward | forward + backward |", "|---|---|---|"]
    for preset in sorted({r["preset"] for r in rows}):
        r = next(x for x in rows if x["preset"] == preset)
        lines.append(f"| {preset} | {r['forward_gflop_per_sample']:,.4g} | {r['step_gflop_per_sample']:,.4g} |")
    return "\n".join(lines) + "\n"


def report(results: Path) -> None:
    rows = [json.loads(line) for path in sorted(results.glob("*.jsonl")) for line in path.read_text().splitlines()]
    if not rows:
        sys.exit(f"no results under {results}: every launch failed (see the output above)")
    text = table(rows)
    print(text)
    if out := os.environ.get("OUT"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "train_gpu.md").write_text(text)
        print(f"written to {Path(out) / 'train_gpu.md'}")


def dry_run(args: argparse.Namespace) -> None:
    """The GPU path on the CPU: tiny preset, gloo, fp32, 1 and 2 ranks, a couple of steps."""
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH")])
    )
    with tempfile.TemporaryDirectory() as results:
        for ranks in (1, 2):
            subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}", __file__,
                 "--worker", "--results", f"{results}/gpus-{ranks}.jsonl", "--presets", "tiny", "--zero", "2,3",
                 "--micro-batch", "2", "--steps", "2", "--warmup", "1"],
                env=env, check=True,
            )  # fmt: skip
        report(Path(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--worker", action="store_true", help="one rank of a measurement (run under torchrun)")
    mode.add_argument("--report", type=Path, metavar="DIR", help="print the table of the results in DIR")
    mode.add_argument("--dry-run", action="store_true", help="CPU check of the whole path with the tiny preset")
    parser.add_argument("--results", type=Path, help="JSONL file rank 0 appends to (--worker)")
    parser.add_argument("--presets", default="sa2va-1b,sa2va-4b")
    parser.add_argument("--zero", default="2,3", help="ZeRO stages")
    parser.add_argument("--micro-batch", type=int, default=8, help="samples per GPU per step")
    parser.add_argument("--tiles", type=int, default=1, help="448-px InternVL tiles per sample")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument(
        "--compile", choices=["off", "encoders", "encoders_and_llm"], default="off",
        help="FinetuneConfig.torch_compile",
    )  # fmt: skip
    parser.add_argument(
        "--fused-gelu", choices=list(SWITCH), default="auto",
        help="FinetuneConfig.fused_encoder_gelu (auto: on GPUs): GELU in the encoders' first MLP matmul",
    )  # fmt: skip
    args = parser.parse_args()
    if args.worker:
        if args.results is None:
            parser.error("--worker needs --results")
        worker(args)
    elif args.report:
        report(args.report)
    else:
        dry_run(args)


if __name__ == "__main__":
    main()

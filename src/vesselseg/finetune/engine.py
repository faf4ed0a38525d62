"""DeepSpeed: the config built from a FinetuneConfig, the learning-rate schedule, the model prepared as the config
asks (checkpointing, fused encoder GELU, compiled blocks), and `deepspeed.initialize`.

The optimizer is DeepSpeed's `AdamW` entry with `torch_adam`: torch's AdamW, fused into one kernel on GPUs and
multi-tensor on the CPU (`fused_adam` overrides). It needs no JIT-compiled op, so CPU runs and fresh GPU machines
start at once. The schedule is a plain LambdaLR handed to DeepSpeed, which saves and restores its state
with every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import deepspeed
import torch
from torch.optim.lr_scheduler import LambdaLR

from vesselseg.finetune.config import FinetuneConfig, Precision, gpu_default
from vesselseg.finetune.memory_plan import GIB, ParameterCount, check_fits
from vesselseg.finetune.safe_load import pickle_enums_by_value
from vesselseg.model import Sa2VAModel

# Printing DeepSpeed's own step lines would duplicate the JSONL log.
_NEVER = 1 << 30


def deepspeed_config(config: FinetuneConfig, world_size: int, precision: Precision, on_gpu: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {
        "stage": config.zero_stage,
        "contiguous_gradients": True,
        "overlap_comm": precision == "bf16",
    }
    if config.zero_stage == 3:
        # The checkpoint keeps ZeRO's partitions; the convert stage consolidates them with zero_to_fp32.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    # ZeRO hands the optimizer a few flat fp32 partitions, so the multi-tensor form gains nothing from batching
    # tensors and pays a pass over memory per operation: the fused kernel makes one.
    fused = gpu_default(config.fused_adam, on_gpu)
    optimizer_params: dict[str, Any] = {
        "lr": config.lr,
        "betas": list(config.betas),
        "eps": config.eps,
        "weight_decay": config.weight_decay,
        "torch_adam": True,
        "fused": fused,
    }
    return {
        "train_batch_size": config.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation(world_size),
        "gradient_clipping": config.gradient_clipping,
        # DeepSpeed's bf16 overflow scan launches a few kernels per gradient tensor (LoRA makes ~500): 100 ms of
        # a 513 ms sa2va-4b step on an H100 (benchmarks/results/train_profile.md). bf16 needs no loss scaling, so
        # the loop checks the global norm DeepSpeed computes anyway and stops on a non-finite one instead.
        "bf16": {"enabled": precision == "bf16", "check_grad_overflow": False},
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "steps_per_print": _NEVER,
        "wall_clock_breakdown": False,
    }


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based): linear warm-up reaching 1 at the last
    warm-up step, then cosine decay towards `min_ratio` (reached one step after the last)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_steps(config: FinetuneConfig) -> int:
    return round(config.warmup_ratio * config.steps)


def prepare_model(model: Sa2VAModel, config: FinetuneConfig, on_gpu: bool) -> None:
    """What `config` asks of the model itself, in place: activation checkpointing, the fused encoder GELU and the
    compiled blocks (the GELU's class swap first, so that compilation traces the fused forward)."""
    if config.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if gpu_default(config.fused_encoder_gelu, on_gpu):
        model.fuse_encoder_gelu()
    if config.torch_compile != "off":
        model.compile_blocks(llm_layers=config.torch_compile == "encoders_and_llm")


def initialize(model: Sa2VAModel, config: FinetuneConfig, world_size: int, precision: Precision, on_gpu: bool) -> Any:
    """`model` prepared as `config` asks (`prepare_model`) inside a DeepSpeed engine that trains only its parameters
    that require grad. On GPUs a run whose weights and optimizer state alone cannot fit one GPU stops here."""
    if on_gpu:
        gpu_gib = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB
        check_fits(ParameterCount.of(model), config.zero_stage, world_size, gpu_gib)
    prepare_model(model, config, on_gpu)
    pickle_enums_by_value()
    warmup = warmup_steps(config)

    def schedule(optimizer: torch.optim.Optimizer) -> LambdaLR:
        return LambdaLR(optimizer, lambda step: lr_factor(step, config.steps, warmup, config.min_lr_ratio))

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(config, world_size, precision, on_gpu),
        lr_scheduler=schedule,
    )
    return engine

"""How much GPU memory a fine-tuning run holds before its first activation, per ZeRO stage and GPU count.

The model is bf16 mixed precision with DeepSpeed's ZeRO and torch's AdamW, as `engine.deepspeed_config` sets it up:

| state | bytes | ZeRO-2 | ZeRO-3 |
|---|---|---|---|
| every weight, frozen or trained, in bf16 | 2 per parameter | on every GPU | split, plus the live window |
| fp32 master copy and Adam's two moments | 12 per trained parameter | split | split |
| bf16 gradients | 2 per trained parameter | split, plus one reduce bucket | split, plus one reduce bucket |

What is left of a GPU after this is the activation budget, which sets the micro-batch. DeepSpeed's defaults give the
bucket (5e8 elements) and the ZeRO-3 window (1e9 live parameters). The sharded share was checked against the measured
sa2va-4b rows of benchmarks/results/train_gpu.md (peak on 1, 2 and 4 GPUs): benchmarks/results/memory_plan.md.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.finetune.errors import TrainingError

GIB = 2**30
REDUCE_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's reduce_bucket_size default
STAGE3_LIVE_PARAMETERS = 1_000_000_000  # DeepSpeed's stage3_max_live_parameters default
BF16_BYTES, MASTER_AND_ADAM_BYTES = 2, 12
# The least a step needs beside the plan: the CUDA context, NCCL and cuBLAS buffers outside torch's allocator, the
# allocator's slack and one small micro-batch's activations (benchmarks/results/memory_plan.md).
RESERVE_GIB = 4.0


class ParameterCount(BaseModel):
    """A model's parameters split by whether the training recipe trains them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trained: int = Field(ge=0, description="parameters with requires_grad after the training recipe")
    frozen: int = Field(ge=0, description="parameters the recipe leaves frozen")

    @classmethod
    def of(cls, model: torch.nn.Module) -> ParameterCount:
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return cls(trained=trained, frozen=sum(p.numel() for p in model.parameters()) - trained)


class MemoryPlan(BaseModel):
    """What one GPU holds for a run before activations: element counts, and GiB in bf16 mixed precision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zero_stage: Literal[2, 3]
    gpus: int = Field(ge=1, description="data-parallel ranks the ZeRO partitions are split over")
    weight_elements: float = Field(description="weights resident on one rank (ZeRO-3: its partition)")
    gathered_elements: float = Field(description="ZeRO-3: other ranks' weights gathered at a time, at most")
    master_elements: float = Field(description="trained parameters whose fp32 copy and Adam moments this rank owns")
    gradient_elements: float = Field(description="this rank's gradient partition and one reduce bucket")

    @property
    def weights_gib(self) -> float:
        return BF16_BYTES * (self.weight_elements + self.gathered_elements) / GIB

    @property
    def optimizer_gib(self) -> float:
        return MASTER_AND_ADAM_BYTES * self.master_elements / GIB

    @property
    def gradients_gib(self) -> float:
        return BF16_BYTES * self.gradient_elements / GIB

    @property
    def static_gib(self) -> float:
        return self.weights_gib + self.optimizer_gib + self.gradients_gib

    def activation_budget_gib(self, gpu_gib: float) -> float:
        """What a GPU of `gpu_gib` has left for activations, the allocator's slack and the CUDA context."""
        return gpu_gib - self.static_gib


def plan(count: ParameterCount, zero_stage: Literal[2, 3], gpus: int) -> MemoryPlan:
    total = count.trained + count.frozen
    resident = total if zero_stage == 2 else total / gpus
    return MemoryPlan(
        zero_stage=zero_stage,
        gpus=gpus,
        weight_elements=resident,
        gathered_elements=min(total - resident, STAGE3_LIVE_PARAMETERS),
        master_elements=count.trained / gpus,
        gradient_elements=count.trained / gpus + min(count.trained, REDUCE_BUCKET_ELEMENTS),
    )


def check_fits(
    count: ParameterCount, zero_stage: Literal[2, 3], gpus: int, gpu_gib: float, reserve_gib: float = RESERVE_GIB
) -> MemoryPlan:
    """The plan for this run; raises TrainingError naming the numbers and the way out when its state alone leaves
    less than `reserve_gib` of a GPU, so that a 26B run fails before minutes of loading instead of at its first step."""
    chosen = plan(count, zero_stage, gpus)
    if chosen.activation_budget_gib(gpu_gib) >= reserve_gib:
        return chosen
    advice = "use zero_stage 3, which splits the frozen weights too, or more GPUs"
    if zero_stage == 3:
        advice = "use more GPUs (or GPUs with more memory)"
    raise TrainingError(
        f"ZeRO-{zero_stage} on {gpus} GPU(s) holds {chosen.static_gib:.1f} GiB per GPU before any activation "
        f"(weights {chosen.weights_gib:.1f}, optimizer {chosen.optimizer_gib:.1f}, gradients "
        f"{chosen.gradients_gib:.1f}), which leaves less than the {reserve_gib:.0f} GiB a step needs besides of a "
        f"{gpu_gib:.1f} GiB GPU; {advice}"
    )

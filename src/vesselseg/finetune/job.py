"""What the stage hands every rank (`TrainJob`) and what rank 0 hands back (`TrainResult`, `TrainSummary`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.finetune.config import FinetuneConfig, Precision
from vesselseg.storage import InputRef


class TrainJob(ConfigModel):
    """What every rank needs, fixed by the stage before any rank starts (so all ranks agree)."""

    model_config = ConfigDict(extra="forbid")

    config: FinetuneConfig
    dataset: InputRef
    base_model: InputRef | None
    prefix: str
    run_key: str
    precision: Precision
    workdir: str
    stage_config: dict[str, Any]
    world_size: int = Field(ge=1, description="ranks the stage planned for; every rank checks it joined as many")


class TrainSummary(BaseModel):
    """train_summary.json: the run's final numbers."""

    run_key: str
    steps: int
    final_model: str
    final_step: int
    final_loss: float
    final_loss_parts: dict[str, float | None]
    best_step: int | None
    best_val_dice: float | None
    last_val_dice: float | None
    train_s: float
    wall_s: float
    mean_samples_per_s: float
    mean_tokens_per_s: float
    peak_memory_gb: float
    world_size: int
    zero_stage: int
    precision: str
    global_batch_size: int
    micro_batch_size: int
    gradient_accumulation: int
    resumed_from: list[int]
    device: str
    config: dict[str, Any]


class TrainResult(BaseModel):
    training: InputRef = Field(description="the final training artifact (kind 'training')")
    summary: TrainSummary
    resumed_from_step: int | None

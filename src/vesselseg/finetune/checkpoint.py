"""Checkpoints of a run: what a step or final folder holds, and what resuming checks before loading one.

Each folder, published by the stage's `RunPublisher` as `<prefix>/<run key>/step-<N>/` (kind "training-checkpoint",
every `checkpoint_every` steps and at the end) or `<prefix>/<run key>/final/` (kind "training", the run's result),
holds
    model/              Sa2VAConfig.save_pretrained + Sa2VAProcessor.save_pretrained (config, tokenizer)
    checkpoint/         DeepSpeed's engine.save_checkpoint(checkpoint/, tag="global_step<N>"), with its `latest`
    train_log.jsonl     the log up to step N
    state.json          (steps) where the run stands: step, best validation, world size, …
    train_summary.json  (final) the final numbers
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from vesselseg.finetune.base_model import config_differences, config_digest, config_fingerprint
from vesselseg.finetune.errors import TrainingError
from vesselseg.model import Sa2VAConfig, Sa2VAProcessor

STAGE = "finetune"
STEP_KIND, FINAL_KIND = "training-checkpoint", "training"
MODEL_DIR, CHECKPOINT_DIR, LOG_FILE, STATE_FILE, SUMMARY_FILE = (
    "model", "checkpoint", "train_log.jsonl", "state.json", "train_summary.json",
)  # fmt: skip


def tag(step: int) -> str:
    """DeepSpeed's checkpoint tag for a step, as its `latest` file names it."""
    return f"global_step{step}"


class TrainState(BaseModel):
    """Where a run stands at a checkpoint; what resuming needs beyond DeepSpeed's own state."""

    model_config = ConfigDict(extra="forbid")

    step: int
    run_key: str
    model_digest: str
    world_size: int
    zero_stage: int
    precision: str
    best_step: int | None = None
    best_val_dice: float | None = None
    train_s: float = 0.0  # training wall time summed over every launch of the run
    resumed_from: list[int] = []


def write_model_folder(config: Sa2VAConfig, processor: Sa2VAProcessor, folder: Path) -> None:
    """Config and tokenizer: with a checkpoint that holds every parameter, enough to rebuild the module."""
    config.save_pretrained(folder)
    processor.save_pretrained(folder)


def check_compatible(
    state: TrainState, where: str, model: Sa2VAConfig, model_folder: Path, world_size: int, zero_stage: int
) -> None:
    """Refuses a checkpoint written for another model, world size or ZeRO stage, naming what differs."""
    if state.model_digest != config_digest(model):
        found = Sa2VAConfig.from_pretrained(model_folder)
        differences = config_differences(config_fingerprint(model), config_fingerprint(found))
        raise TrainingError(
            f"checkpoint {where} does not match the model being trained: "
            + ("; ".join(differences[:8]) or "the configs differ")
            + (" …" if len(differences) > 8 else "")
        )
    if state.world_size != world_size or state.zero_stage != zero_stage:
        raise TrainingError(
            f"checkpoint {where} was written by {state.world_size} ranks with ZeRO stage {state.zero_stage}; "
            f"this run has {world_size} ranks and stage {zero_stage}. Resume with the same layout, or start "
            "fresh with resume: never"
        )


def read_state(folder: Path) -> TrainState:
    path = folder / STATE_FILE
    if not path.is_file():
        raise TrainingError(f"{folder} holds no {STATE_FILE}: not a step checkpoint of the finetune stage")
    return TrainState.model_validate_json(path.read_text())


def assemble(source: Path, target: Path) -> None:
    """Puts a step folder's model/ and checkpoint/ into `target`, the final artifact's staging folder.

    Hard links where the file system allows: a large model's checkpoint is not copied a second time.
    """
    for name in (MODEL_DIR, CHECKPOINT_DIR):
        shutil.copytree(source / name, target / name, dirs_exist_ok=True, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)

"""Real DeepSpeed checkpoints of a preset, written the way the fine-tuning stage writes them, for tests and benchmarks.

    python -m torch.distributed.run --nproc-per-node 2 -m vesselseg.convert.sample_checkpoint jobs.json

Each job builds `apply_training_recipe(Sa2VAModel(config))`, wraps it in a DeepSpeed engine (any ZeRO stage, gloo
on the CPU with `DS_ACCELERATOR=cpu`), takes a few optimizer steps on random images and saves:

    <out>/model/       Sa2VAConfig.save_pretrained + Sa2VAProcessor.save_pretrained (config, tokenizer; no weights)
    <out>/checkpoint/  engine.save_checkpoint(<out>/checkpoint, tag) with its `latest` file
    <out>/probe.pt     optional: a fixed batch and the engine's own mask and LM logits on it at save time

`probe.pt` is what the live training module produced, so a test can hold a converted model against the engine itself
rather than against another reading of the same files. `write_sample_checkpoints` launches the ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.errors import VesselsegError
from vesselseg.finetune import checkpoint as ckpt


class SampleJob(BaseModel):
    """One checkpoint to write."""

    model_config = ConfigDict(extra="forbid")

    out: Path
    preset: str = "tiny"
    overrides: dict = Field(
        default_factory=dict,
        description="Sa2VAConfig fields replacing the preset's; sub-configs as dicts with model_type",
    )
    zero_stage: Literal[1, 2, 3] = 2
    steps: int = Field(2, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-2
    bf16: bool = False
    zero_init: bool = Field(
        False, description="build the model under deepspeed.zero.Init (ZeRO-3): no rank holds it whole"
    )
    tag: str | None = Field(None, description="checkpoint tag; default global_step<steps>")
    image_size: int = 96
    probe: bool = True
    seed: int = 0


def _batch(processor, seed: int, size: int, count: int = 1):
    from vesselseg.model import prompts

    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size + 16 * i, 3), dtype=np.uint8) for i in range(count)]
    masks = [(rng.random(image.shape[:2]) < 0.2).astype(np.uint8) for image in images]
    return processor(
        images,
        [prompts.segmentation_prompt("the blood vessels")] * count,
        answers=[prompts.FORCED_ANSWER] * count,
        masks=masks,
    )


def _config_overrides(overrides: dict) -> dict:
    from transformers import AutoConfig

    return {
        k: AutoConfig.for_model(**v) if k.endswith("_config") and isinstance(v, dict) else v
        for k, v in overrides.items()
    }


def _ds_config(job: SampleJob) -> dict:
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": job.zero_stage},
        "bf16": {"enabled": job.bf16},
        "steps_per_print": 10**9,
    }
    if job.optimizer == "adamw":
        config["optimizer"] = {"type": "AdamW", "params": {"lr": job.lr, "weight_decay": 0.0}}
    else:
        config["zero_allow_untested_optimizer"] = True
    return config


def _write(job: SampleJob) -> None:
    import deepspeed

    from vesselseg.model import (
        Sa2VAModel,
        Sa2VAProcessor,
        apply_training_recipe,
        build_tokenizer,
        preset_config,
    )

    rank = torch.distributed.get_rank()
    torch.manual_seed(job.seed)
    tokenizer = build_tokenizer()
    config = preset_config(job.preset, tokenizer, **_config_overrides(job.overrides))
    processor = Sa2VAProcessor(config, tokenizer)
    ds_config = _ds_config(job)
    if job.zero_init:
        with deepspeed.zero.Init(config_dict_or_path=ds_config):
            model = Sa2VAModel(config)
    else:
        model = Sa2VAModel(config)
    model = apply_training_recipe(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Stateless SGD keeps a billion-parameter run inside a small machine's memory; AdamW is the real recipe.
    client_optimizer = torch.optim.SGD(trainable, lr=job.lr) if job.optimizer == "sgd" else None
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=trainable, optimizer=client_optimizer, config=ds_config
    )
    dtype = torch.bfloat16 if job.bf16 else torch.float32
    batch = _batch(processor, seed=1000 + rank, size=job.image_size).to("cpu", dtype)
    engine.train()
    for _ in range(job.steps):
        engine.backward(engine(**batch).loss)
        engine.step()
    engine.save_checkpoint(str(job.out / ckpt.CHECKPOINT_DIR), tag=job.tag or ckpt.tag(job.steps))
    if job.probe:
        probe = _batch(processor, seed=7, size=job.image_size, count=2)
        engine.eval()
        with torch.no_grad():
            output = engine(**{**probe.to("cpu", dtype), "gt_masks": None})
        if rank == 0:
            torch.save(
                {
                    "batch": dict(probe.items()),
                    "lm_logits": output.lm_logits.float(),
                    "mask_logits": output.mask_logits.float(),
                },
                job.out / "probe.pt",
            )
    if rank == 0:
        ckpt.write_model_folder(config, processor, job.out / ckpt.MODEL_DIR)
    torch.distributed.barrier()
    engine.destroy()


def main(argv: list[str] | None = None) -> None:
    import deepspeed

    jobs = [SampleJob.model_validate(j) for j in json.loads(Path((argv or sys.argv[1:])[0]).read_text())]
    deepspeed.init_distributed(dist_backend="gloo")
    for job in jobs:
        _write(job)


def write_sample_checkpoints(
    jobs: list[SampleJob], ranks: int = 2, log: Path | None = None, timeout_s: float = 1800
) -> None:
    """Runs every job in one `torch.distributed.run` launch of `ranks` CPU processes (gloo)."""
    if not jobs:
        return
    spec = jobs[0].out.parent / f".sample_jobs_{os.getpid()}.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps([j.model_dump(mode="json") for j in jobs]))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={ranks}",
        "--standalone",
        "-m",
        "vesselseg.convert.sample_checkpoint",
        str(spec),
    ]
    with open(log or os.devnull, "w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
    spec.unlink(missing_ok=True)
    if done.returncode != 0:
        where = f"; see {log}" if log else ""
        raise VesselsegError(f"DeepSpeed sample run failed with exit code {done.returncode}{where}")


if __name__ == "__main__":
    main()

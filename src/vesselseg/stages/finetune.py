"""finetune: DeepSpeed fine-tuning of a Sa2VA model on a data-prep artifact, resumable, published as artifacts.

The stage checks its inputs, fixes the run (run key, precision, ranks), then starts torchrun with one rank per
GPU, or `cpu_processes` gloo ranks on the CPU (each `python -m vesselseg.stages.finetune_rank`), and returns what
rank 0 published. Started as one rank of a job another launcher made (a Kubeflow TrainJob runs this on every rank),
it trains in-process instead. Either way each rank hands the library's loop the run's publisher
(`finetune_rank.StorePublisher`): `<prefix>/<run key>/step-<N>/` checkpoints and `<prefix>/<run key>/final/`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from pydantic import ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.errors import StorageError
from vesselseg.finetune import FinetuneConfig, TrainingError
from vesselseg.finetune import checkpoint as ckpt
from vesselseg.finetune.base_model import OFFICIAL, base_model_ref, config_digest, model_config, official_artifact_uri
from vesselseg.finetune.job import TrainJob, TrainResult
from vesselseg.finetune.launch import launched_rank, launched_world_size, run_workers
from vesselseg.finetune.workdir import LAUNCH_SUFFIX, claimed, new_workdir, remove_abandoned
from vesselseg.model import Sa2VAConfig
from vesselseg.stages import finetune_rank, import_official
from vesselseg.stages.contract import Emitted, Input, Metrics, Output, Pointer, Stage
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, read_manifest, resolve
from vesselseg.storage.artifact import content_key
from vesselseg.storage.settings import work_dir

log = logging.getLogger(__name__)

NAME = "finetune"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    dataset: InputRef | str = Field(description="the data-prep artifact (InputRef, or its s3:// URI)")
    training: FinetuneConfig = Field(default_factory=FinetuneConfig)
    prefix: str = Field("vesselseg/training", description="runs land at <prefix>/<run key>/")


# What rank 0 published; the stage contract's name for it.
Result = TrainResult


def _check_dataset(store: ObjectStore, ref: InputRef, training: FinetuneConfig, folder: Path) -> None:
    fetch_dir(store, ref, folder, only=["index.parquet"])
    counts = pd.read_parquet(folder / "index.parquet")["split"].value_counts().to_dict()
    if not counts.get("train"):
        raise TrainingError(f"dataset {ref.uri} has no images in its train split (split sizes: {counts})")
    if training.val_every and not counts.get(training.val_split):
        raise TrainingError(
            f"dataset {ref.uri} has no images in its {training.val_split!r} split (split sizes: {counts}); "
            "validate on another split (val_split) or set val_every: null"
        )


def _check_resume(store: ObjectStore, uri: str, model: Sa2VAConfig, ranks: int, zero_stage: int, folder: Path) -> None:
    """An explicitly named checkpoint must be a step artifact of the same model, world size and ZeRO stage."""
    manifest = read_manifest(store, uri)
    if manifest.kind != ckpt.STEP_KIND:
        raise TrainingError(
            f"resume: {uri} is a {manifest.kind!r} artifact, not a step checkpoint ({ckpt.STEP_KIND!r})"
        )
    fetch_dir(store, uri, folder, only=[ckpt.STATE_FILE, f"{ckpt.MODEL_DIR}/config.json"])
    ckpt.check_compatible(ckpt.read_state(folder), uri, model, folder / ckpt.MODEL_DIR, ranks, zero_stage)


def _import_official_once(src: str, store: ObjectStore) -> None:
    """An official Sa2VA folder becomes a native model artifact the first time a run names it; later runs reuse it."""
    out = official_artifact_uri(src, store)
    try:
        resolve(store, out)
        return
    except StorageError:
        log.info("importing official weights from %s into %s", src, out)
    import_official.run(import_official.Config(src=src, out=out), store)


def _ranks(training: FinetuneConfig, on_gpu: bool) -> int:
    if launched_rank():
        return launched_world_size()
    if not on_gpu:
        return training.cpu_processes
    import torch

    available = torch.cuda.device_count()
    if training.gpus and training.gpus > available:
        raise TrainingError(f"gpus: {training.gpus} requested but only {available} visible")
    return training.gpus or available


def run_name(prefix: str, run_key: str) -> str:
    """What a run's work folders are named after; the prefix keeps equal runs published elsewhere apart."""
    return f"{NAME}-{content_key(prefix.strip('/'), run_key)}"


def prepare(config: Config, store: ObjectStore) -> TrainJob:
    """Everything every rank must agree on, fixed before any rank starts; bad inputs fail here."""
    import torch

    training = config.training
    dataset = resolve(store, config.dataset)
    on_gpu = torch.cuda.is_available()
    precision = training.resolve_precision(on_gpu)
    ranks = _ranks(training, on_gpu)
    training.gradient_accumulation(ranks)
    with scratch_dir(NAME) as scratch:
        _check_dataset(store, dataset, training, scratch / "dataset")
        if training.base_model.startswith(OFFICIAL):
            _import_official_once(training.base_model.removeprefix(OFFICIAL), store)
        base = base_model_ref(training.base_model, store)
        model = model_config(training.base_model, training.model_overrides, training.sam2, store, scratch / "base")
        if training.resume.startswith("s3://"):
            _check_resume(store, training.resume, model, ranks, training.zero_stage, scratch / "resume")
    run_key = content_key(
        training.key_fields(),
        dataset.manifest_sha256,
        base.manifest_sha256 if base else training.base_model,
        config_digest(model),
        precision,
    )
    return TrainJob(
        config=training,
        dataset=dataset,
        base_model=base,
        prefix=config.prefix.strip("/"),
        run_key=run_key,
        precision=precision,
        # One folder per launch, so that two identical runs at once never share one; rank 0's is every rank's.
        workdir=str(new_workdir(work_dir() / "scratch", run_name(config.prefix, run_key))),
        stage_config=config.model_dump(mode="json"),
        world_size=ranks,
    )


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    store.check()
    job = prepare(config, store)
    log.info(
        "finetune run %s: %s, results under %s",
        job.run_key,
        job.config.base_model,
        store.uri(f"{job.prefix}/{job.run_key}/"),
    )
    if launched_rank():
        return finetune_rank.train_rank(job, store)
    import torch

    workdir = Path(job.workdir)
    # The ranks remove their work folder themselves; `claimed` covers ranks that died first, and a launch killed
    # before it could clean up is cleaned by the next launch of the same run.
    with claimed(workdir):
        remove_abandoned(workdir.parent, run_name(job.prefix, job.run_key))
        launch = Path(f"{workdir}{LAUNCH_SUFFIX}")
        launch.mkdir(parents=True)
        job_file, result_file = launch / "job.json", launch / "result.json"
        job_file.write_text(job.model_dump_json(indent=2))
        run_workers(finetune_rank.__name__, job_file, result_file, job.world_size, torch.cuda.is_available())
        return Result.model_validate_json(result_file.read_text())


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    summary = result.summary
    values = {
        "final_loss": summary.final_loss,
        "best_val_dice": summary.best_val_dice,
        "last_val_dice": summary.last_val_dice,
        "train_s": summary.train_s,
        "samples_per_s": summary.mean_samples_per_s,
    }
    return {
        "training": Pointer(result.training, {"run_key": summary.run_key, "final_step": summary.final_step}),
        "metrics": Metrics(values),
    }


STAGE = Stage(
    name=NAME,
    description="DeepSpeed fine-tuning (one rank per GPU, or CPU ranks on gloo); resumes a killed run from its "
    "checkpoints. `training` points at the published training artifact (model/ config + tokenizer, DeepSpeed "
    "checkpoint/, train_log.jsonl, train_summary.json); `metrics` holds the final numbers. GPUs, /dev/shm and the "
    "timeout are set on the task by the pipeline's platform settings.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=(Input("dataset", "Dataset", "dataset"),),
    outputs=(Output("training", "Model"), Output("metrics", "Metrics")),
    gpu=True,
)

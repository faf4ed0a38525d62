"""infer: the model's probability maps for the validation and test images, on whatever devices are there.

Inputs are the model (a published HF-folder artifact, or a local folder for command-line use) and the dataset's
images and FOVs of the predicted splits; ground truth is never fetched. The output is a prediction set whose
manifest lists only those two inputs. A re-run resumes from the images already done (see `infer.runner`);
`shard` runs one slice of the micro-batches (for fan-out over nodes) and publishes nothing — a final run without
`shard` then only assembles and publishes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vesselseg.config import ConfigModel
from vesselseg.infer import InferConfig, InferError, ModelFolder, Plan, PredictorSpec
from vesselseg.infer.images import FileImages
from vesselseg.infer.remote_code import require_opt_in
from vesselseg.infer.runner import (
    ResumeState,
    RunStats,
    finished_records,
    make_plan,
    predict_into,
    records_summary,
    write_prediction_set,
)
from vesselseg.infer.source import dtype_of
from vesselseg.model.prompts import segmentation_prompt
from vesselseg.predictions import PredictorInfo
from vesselseg.stages.contract import Emitted, Input, Output, Pointer, Stage
from vesselseg.stages.inputs import fetch_dataset
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, publish_dir, read_manifest, resolve
from vesselseg.storage.artifact import content_key, local_fingerprint
from vesselseg.storage.settings import work_dir

log = logging.getLogger(__name__)

NAME = "infer"
DEFAULT_EXPRESSION = "blood vessels"


class Shard(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    count: int = Field(ge=1)

    @model_validator(mode="after")
    def _index_in_range(self) -> Shard:
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} must be below count {self.count}")
        return self


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    model: InputRef | str = Field(description="model artifact (InputRef or s3:// URI), or a local HF folder")
    dataset: InputRef | str = Field(description="the data-prep artifact (InputRef, or its s3:// URI)")
    splits: list[str] = Field(default_factory=lambda: ["val", "test"], min_length=1)
    infer: InferConfig = Field(default_factory=InferConfig)
    threshold: float = Field(
        0.5, ge=0, le=1, description="the predictor's own threshold (the evaluation chooses its own)"
    )
    shard: Shard | None = Field(None, description="predict one slice and publish nothing (fan-out)")
    resume_remote: bool = Field(True, description="mirror finished images to the object store (resume in a new pod)")
    prefix: str = "vesselseg/predictions"


class Result(BaseModel):
    predictions: InputRef | None = Field(description="None for a shard run, which publishes nothing")
    info: PredictorInfo | None
    plan: Plan
    stats: RunStats
    state: str = Field(description="the local resume folder (removed once the predictions are published)")
    summary: dict[str, object] = Field(default_factory=dict)


def _model_folder(store: ObjectStore, model: InputRef | str) -> tuple[Path, InputRef | None, str]:
    """(local folder, artifact reference or None, identity hash); artifacts are cached by their manifest hash."""
    if isinstance(model, str) and not model.startswith("s3://"):
        folder = Path(model).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise InferError(f"model {model!r}: {folder / 'config.json'} is missing; not a Hugging Face model folder")
        return folder, None, local_fingerprint(folder)
    ref = resolve(store, model)
    manifest = read_manifest(store, ref)
    if manifest.kind != "model":
        raise InferError(f"model {ref.uri} is a {manifest.kind!r} artifact, not a 'model' (a converted HF folder)")
    folder = work_dir() / "cache" / "models" / ref.manifest_sha256[:16]
    fetch_dir(store, ref, folder)
    return folder, ref, ref.manifest_sha256


def _expression(store: ObjectStore, dataset_ref: InputRef, config: InferConfig) -> str:
    """The configured expression, else the referring text data-prep wrote into the annotations (from its config,
    so the annotation files, which hold ground truth, are never read)."""
    if config.expression:
        return config.expression
    data = read_manifest(store, dataset_ref).config.get("data", {})
    return str(data.get("referring_text") or DEFAULT_EXPRESSION)


def _state_key(model_id: str, dataset_ref: InputRef, spec: PredictorSpec, config: Config, on_gpu: bool) -> str:
    """Everything that changes a probability map, and nothing that does not (strategy, GPUs, shard)."""
    return content_key(
        model_id,
        dataset_ref.manifest_sha256,
        spec.backend,
        spec.mode,
        spec.prompt,
        spec.max_new_tokens,
        str(dtype_of(spec.dtype, on_gpu)),
        config.infer.batch_size,
    )


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    started = time.perf_counter()
    require_opt_in(config.infer, config.model if isinstance(config.model, str) else config.model.uri)
    dataset_ref = resolve(store, config.dataset)
    folder, model_ref, model_id = _model_folder(store, config.model)
    infer = config.infer
    prompt = segmentation_prompt(_expression(store, dataset_ref, infer))  # one prompt for both backends
    spec = PredictorSpec(
        backend=infer.backend,
        source=ModelFolder(path=str(folder)),
        dtype=infer.dtype,
        layout=infer.layout,
        mode=infer.mode,
        prompt=prompt,
        max_new_tokens=infer.max_new_tokens,
        trust_remote_code=infer.trust_remote_code,
    )
    with scratch_dir(NAME) as scratch:
        dataset = fetch_dataset(store, dataset_ref, scratch / "dataset", config.splits, truth_splits=[])
        rows = dataset.index[dataset.index["split"].isin(config.splits)]
        if rows.empty:
            raise InferError(f"dataset {dataset_ref.uri} has no images in splits {config.splits}")
        splits_of = dict(zip(rows["sample_id"], rows["split"]))
        images = FileImages({i: str(dataset.root / p) for i, p in zip(rows["sample_id"], rows["image"])})
        read_files = sorted(set(rows["image"]) | set(rows["fov"].dropna()))
        fetched = time.perf_counter()

        plan = make_plan(spec, infer, (int(rows["height"].iloc[0]), int(rows["width"].iloc[0])))
        on_gpu = bool(plan.groups[0])
        key = _state_key(model_id, dataset_ref, spec, config, on_gpu)
        state = ResumeState(
            work_dir() / "infer-state" / key,
            store if config.resume_remote else None,
            f"{config.prefix.strip('/')}/partial/{key}" if config.resume_remote else None,
        )
        if pulled := state.pull():
            log.info("resume: fetched %d finished images from the object store", pulled)
        shard = None if config.shard is None else (config.shard.index, config.shard.count)
        stats = predict_into(state, plan, spec, images, splits_of, infer.batch_size, shard=shard)
        predicted = time.perf_counter()
        if config.shard is not None:
            return Result(predictions=None, info=None, plan=plan, stats=stats, state=str(state.root))

        details = {
            "strategy": plan.strategy,
            "plan": plan.describe(),
            "plan_reason": plan.reason,
            "backend": infer.backend,
            "mode": infer.mode,
            "prompt": prompt,
            "dtype": str(dtype_of(spec.dtype, on_gpu)).removeprefix("torch."),
            "batch_size": infer.batch_size,
            "model": model_ref.uri if model_ref else str(folder),
            "model_sha256": model_id,
        }
        records = finished_records(state, list(splits_of))
        seg = records_summary(records)
        if seg["zero_seg_images"]:
            log.warning(
                "infer: %d of %d answers wrote no [SEG]; their maps are all zero (e.g. %s)",
                seg["zero_seg_images"],
                seg["images"],
                seg["zero_seg_examples"],
            )
        info = PredictorInfo(
            name="model",
            threshold=config.threshold,
            threshold_source=f"fixed {config.threshold:g}; the evaluation chooses its own on the validation split",
            # The remote-code backend only returns thresholded masks: a 0/1 map ranks nothing (no AUC).
            calibrated=infer.backend == "native",
            read_files=read_files,
            details=details | seg,
        )
        write_prediction_set(state, records, scratch / "out", info)
        inputs = {"dataset": dataset_ref} | ({"model": model_ref} if model_ref else {})
        out_key = content_key(key, config.threshold, sorted(config.splits))
        ref, _ = publish_dir(
            store,
            scratch / "out",
            f"{config.prefix.strip('/')}/model-{out_key}",
            kind="predictions",
            stage=NAME,
            config=config.model_dump(mode="json"),
            inputs=inputs,
            timings_s={
                "fetch": fetched - started,
                "predict": predicted - fetched,
                "publish": time.perf_counter() - predicted,
            },
            summary={
                "predictor": info.name,
                "threshold": info.threshold,
                "calibrated": info.calibrated,
                "read_files": read_files,
                "plan": plan.describe(),
                **seg,
            },
            # Speeds differ on every run: kept out of the identity, so a re-run keeps references to the artifact.
            run_stats=stats.model_dump(mode="json"),
        )
    state.clear()
    log.info("predictions published at %s", ref.uri)
    return Result(predictions=ref, info=info, plan=plan, stats=stats, state=str(state.root), summary=seg)


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    if result.predictions is None or result.info is None:
        raise InferError("a shard run publishes no prediction set; only the whole run has outputs")
    metadata = {
        "predictor": result.info.name,
        "strategy": result.plan.strategy,
        "plan": result.plan.describe(),
        "images_per_s": round(result.stats.images_per_s, 3),
        "zero_seg_images": result.summary["zero_seg_images"],
    }
    return {"predictions": Pointer(result.predictions, metadata)}


STAGE = Stage(
    name=NAME,
    description="Probability maps of the val and test images (never their ground truth); strategy and batch in "
    "overrides.infer.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=(Input("model", "Artifact", "model"), Input("dataset", "Dataset", "dataset")),
    outputs=(Output("predictions", "Artifact"),),
    reserved=("shard",),
    gpu=True,
)

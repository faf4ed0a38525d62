"""baseline: Frangi vesselness predictions for the validation and test images, in the inference format."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.baseline import FrangiConfig, frangi_predictions
from vesselseg.config import ConfigModel
from vesselseg.predictions import PredictorInfo
from vesselseg.stages.contract import Emitted, Input, Output, Pointer, Stage
from vesselseg.stages.inputs import fetch_dataset
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import InputRef, ObjectStore, publish_dir, resolve
from vesselseg.storage.artifact import content_key

NAME = "baseline"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    dataset: InputRef | str = Field(description="the data-prep artifact (InputRef, or its s3:// URI)")
    frangi: FrangiConfig = Field(default_factory=FrangiConfig)
    splits: list[str] = Field(default_factory=lambda: ["val", "test"])
    threshold_split: str = "val"
    prefix: str = "vesselseg/predictions"


class Result(BaseModel):
    predictions: InputRef
    info: PredictorInfo


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    started = time.perf_counter()
    dataset_ref = resolve(store, config.dataset)
    with scratch_dir(NAME) as scratch:
        dataset = fetch_dataset(store, dataset_ref, scratch / "dataset", config.splits, [config.threshold_split])
        fetched = time.perf_counter()
        info = frangi_predictions(dataset, config.splits, config.threshold_split, config.frangi, scratch / "out")
        predicted = time.perf_counter()
        key = content_key(config.model_dump(mode="json", exclude={"dataset"}), dataset_ref.manifest_sha256)
        ref, _ = publish_dir(
            store,
            scratch / "out",
            f"{config.prefix.strip('/')}/frangi-{key}",
            kind="predictions",
            stage=NAME,
            config=config.model_dump(mode="json"),
            inputs={"dataset": dataset_ref},
            timings_s={
                "fetch": fetched - started,
                "predict": predicted - fetched,
                "publish": time.perf_counter() - predicted,
            },
            summary={"predictor": info.name, "threshold": info.threshold, "read_files": info.read_files},
        )
    return Result(predictions=ref, info=info)


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    return {
        "predictions": Pointer(result.predictions, {"predictor": result.info.name, "threshold": result.info.threshold})
    }


STAGE = Stage(
    name=NAME,
    description="Frangi vesselness on the validation and test images; threshold chosen on validation only.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=(Input("dataset", "Dataset", "dataset"),),
    outputs=(Output("predictions", "Artifact"),),
)

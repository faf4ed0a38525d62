"""data-prep: read a dataset (or generate the synthetic one), split it, publish it with a manifest."""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.data import DataPrepConfig, DatasetSummary, prepare_dataset
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import InputRef, ObjectStore, publish_dir
from vesselseg.storage.artifact import fetch_raw_prefix

log = logging.getLogger(__name__)

NAME = "data-prep"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    data: DataPrepConfig = Field(default_factory=DataPrepConfig)
    prefix: str = Field("vesselseg/datasets", description="artifacts land at <prefix>/<dataset fingerprint>/")


class Result(BaseModel):
    dataset: InputRef
    summary: DatasetSummary


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    store.check()
    started = time.perf_counter()
    with scratch_dir(NAME) as scratch:
        data_config = config.data
        if data_config.source.startswith("s3://"):
            # A raw dataset in the object store (how a cluster run reaches DRIVE & co.) is read locally.
            raw = scratch / "raw"
            fetch_raw_prefix(store, data_config.source, raw)
            data_config = data_config.model_copy(update={"source": str(raw)})
        out = scratch / "dataset"
        summary = prepare_dataset(data_config, out)
        prepared = time.perf_counter()
        ref, _ = publish_dir(
            store,
            out,
            f"{config.prefix.strip('/')}/{summary.fingerprint[:16]}",
            kind="dataset",
            stage=NAME,
            config=config.model_dump(mode="json"),
            timings_s={"prepare": prepared - started, "publish": time.perf_counter() - prepared},
            summary=summary.model_dump(mode="json"),
        )
    log.info("dataset published at %s", ref.uri)
    return Result(dataset=ref, summary=summary)

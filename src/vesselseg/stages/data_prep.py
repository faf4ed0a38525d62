"""data-prep: read a dataset (or generate the synthetic one), split it, publish it with a manifest.

Two artifacts come out: the dataset (images, FOVs, train/val ground truth, index) and the test split's ground
truth on its own (``test_labels``, in the test-label bucket, see ``stages.test_labels``). Only the tasks that
score and draw are given the second.
"""

from __future__ import annotations

import json
import logging
import shutil
import time

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.data import DataPrepConfig, DatasetSummary, prepare_dataset
from vesselseg.data.prepare import TEST_LABELS_DIR
from vesselseg.stages.contract import Emitted, Output, Parameter, Pointer, Stage
from vesselseg.stages.scratch import scratch_dir
from vesselseg.stages.test_labels import label_store
from vesselseg.storage import InputRef, ObjectStore, publish_dir
from vesselseg.storage.artifact import fetch_raw_prefix

log = logging.getLogger(__name__)

NAME = "data-prep"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    data: DataPrepConfig = Field(default_factory=DataPrepConfig)
    prefix: str = Field("vesselseg/datasets", description="artifacts land at <prefix>/<dataset fingerprint>/")
    test_labels_prefix: str = Field(
        "vesselseg/test-labels", description="in the test-label bucket: <prefix>/<dataset fingerprint>/"
    )


class Result(BaseModel):
    dataset: InputRef
    test_labels: InputRef
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
        # Out of the dataset folder before it is published: the test labels travel only as their own artifact.
        labels = scratch / TEST_LABELS_DIR
        shutil.move(out / TEST_LABELS_DIR, labels)
        prepared = time.perf_counter()
        ref, _ = publish_dir(
            store,
            out,
            f"{config.prefix.strip('/')}/{summary.fingerprint[:16]}",
            kind="dataset",
            stage=NAME,
            config=config.model_dump(mode="json"),
            timings_s={"prepare": prepared - started, "publish": time.perf_counter() - prepared},
            summary=summary.model_dump(mode="json", exclude={"test_labels"}),
        )
        labels_store = label_store(store)
        labels_store.ensure_bucket()
        labels_ref, _ = publish_dir(
            labels_store,
            labels,
            f"{config.test_labels_prefix.strip('/')}/{summary.fingerprint[:16]}",
            kind="test-labels",
            stage=NAME,
            config=config.model_dump(mode="json"),
            inputs={"dataset": ref},
            summary={"fingerprint": summary.fingerprint, "test": summary.test_labels.model_dump(mode="json")},
            cache=False,  # the artifact cache may be a volume every stage mounts; test ground truth stays out of it
        )
    log.info("dataset published at %s, its test labels at %s", ref.uri, labels_ref.uri)
    return Result(dataset=ref, test_labels=labels_ref, summary=summary)


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    fingerprint = result.summary.fingerprint
    splits = json.dumps({name: stats.n_images for name, stats in result.summary.splits.items()})
    return {
        "dataset": Pointer(result.dataset, {"fingerprint": fingerprint, "splits": splits}),
        "test_labels": Pointer(result.test_labels, {"fingerprint": fingerprint, "split": "test"}),
    }


STAGE = Stage(
    name=NAME,
    description="Read the dataset at `source` (or generate `synthetic`), split it, publish it to the object store; "
    "the test split's ground truth goes to `test_labels`, its own artifact, for the scoring tasks only.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    parameters=(
        Parameter("source", str, ("data.source",)),
        Parameter("seed", int, ("data.synthetic.seed", "data.split.seed")),
    ),
    outputs=(Output("dataset", "Dataset"), Output("test_labels", "Dataset")),
)

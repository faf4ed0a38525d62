"""import-official: an official Sa2VA Hugging Face folder → the native model folder + its mapping report.

    vesselseg import-official --set src=/models/Sa2VA-4B --set out=/models/Sa2VA-4B-native
    vesselseg import-official --set src=s3://mlpipeline/official/Sa2VA-26B/ \
        --set out=s3://mlpipeline/vesselseg/models/sa2va-26b/

`src` is a local folder or an object-store prefix (a published artifact, or files uploaded as they are); `out` a
local folder (must be empty) or an object-store prefix, where the folder is published as a `model` artifact that
the fine-tuning stage can name as its base model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformers import Sam2Config

from vesselseg.config import ConfigModel
from vesselseg.model.official import REPORT, import_official
from vesselseg.model.official.load import fetch_source
from vesselseg.stages.contract import Emitted, Stage
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import InputRef, ObjectStore, publish_dir
from vesselseg.storage.artifact import MANIFEST, resolve

NAME = "import-official"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    src: str = Field(description="official Sa2VA folder: a local path or an s3:// prefix")
    out: str = Field(description="where the native folder goes: an empty local path or an s3:// prefix")
    preset: str = Field("auto", description="auto, or the release the folder must be (e.g. sa2va-26b)")
    allow_missing: list[str] = Field(default_factory=list, description="optional parts the checkpoint may lack")
    dtype: str | None = Field(None, description="dtype of the saved weights; default the official torch_dtype")
    sam2_config: dict[str, Any] | None = Field(
        None, description="SAM2's shape when it is not Hiera-L (config.json does not record it; releases are Hiera-L)"
    )


class Result(BaseModel):
    out: str
    model: InputRef | None  # the published artifact when `out` is an s3:// prefix
    family: str
    release: str | None
    parameters: int
    mapped_tensors: int
    ignored_tensors: int
    initialised_tensors: int
    seconds: float


def run(config: Config, store: ObjectStore | None = None) -> Result:
    remote_src, remote_out = config.src.startswith("s3://"), config.out.startswith("s3://")
    if (remote_src or remote_out) and store is None:
        store = ObjectStore()
    started = time.perf_counter()
    with scratch_dir(NAME) as scratch:
        src = fetch_source(config.src, scratch / "source", store)
        fetched = time.perf_counter()
        out = scratch / "native" if remote_out else Path(config.out)
        report = import_official(
            src,
            out,
            config.preset,
            config.allow_missing,
            dtype=config.dtype,
            sam2_config=Sam2Config(**config.sam2_config) if config.sam2_config else None,
        )
        imported = time.perf_counter()
        ref = None
        if remote_out:
            inputs = {}
            if remote_src and store.exists(store.key_of(config.src.rstrip("/") + "/") + MANIFEST):
                inputs["official"] = resolve(store, config.src)
            ref, _ = publish_dir(
                store,
                out,
                store.key_of(config.out),
                kind="model",
                stage=NAME,
                config=config.model_dump(mode="json"),
                inputs=inputs,
                timings_s={
                    "fetch": fetched - started,
                    "import": imported - fetched,
                    "publish": time.perf_counter() - imported,
                },
                summary={"family": report.family, "release": report.release, "parameters": report.parameters,
                         "report": REPORT},
            )  # fmt: skip
    return Result(
        out=ref.uri if ref else str(out),
        model=ref,
        family=report.family,
        release=report.release,
        parameters=report.parameters,
        mapped_tensors=len(report.tensors),
        ignored_tensors=len(report.ignored),
        initialised_tensors=len(report.initialised),
        seconds=round(time.perf_counter() - started, 3),
    )


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    return {}


# Run from the command line (and by finetune for an `official:` base model); no pipeline task runs it.
STAGE = Stage(
    name=NAME,
    description="An official Sa2VA Hugging Face folder → the native model folder and its mapping report.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
)

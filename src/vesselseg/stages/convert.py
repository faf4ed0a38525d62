"""convert: a fine-tuning run's DeepSpeed checkpoint (or an xtuner iter_N.pth) → a verified Hugging Face model folder.

Inputs: the fine-tuning artifact (`model/` + `checkpoint/`), or an xtuner `iter_N.pth` with the base model it
overlays; and the dataset, whose validation images are the parity probe. Output: a "model" artifact holding the
safetensors shards, index, config, generation config, tokenizer and `parity.json`; the parity numbers are in the
manifest summary. Nothing is published unless parity passes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vesselseg.config import ConfigModel
from vesselseg.convert import (
    CHECKPOINT_DIR,
    MODEL_DIR,
    DeepSpeedInput,
    OutputConfig,
    ParityConfig,
    ParityReport,
    XtunerInput,
    convert_checkpoint,
    raise_unless_passed,
    verify_parity,
)
from vesselseg.convert.zero import LATEST, choose_tag
from vesselseg.stages.contract import Emitted, Input, Metrics, Output, Pointer, Stage
from vesselseg.stages.inputs import fetch_dataset
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import (
    InputRef,
    ObjectStore,
    fetch_dir,
    publish_dir,
    read_manifest,
    resolve,
)
from vesselseg.storage.artifact import content_key, local_fingerprint

log = logging.getLogger(__name__)

NAME = "convert"
OVERLAY_FILE = "overlay_report.json"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    training: InputRef | str | None = Field(
        None, description="fine-tuning artifact (model/ + checkpoint/): InputRef, its s3:// URI, or a local folder"
    )
    tag: str | None = Field(None, description="checkpoint tag; default: the one checkpoint/latest names")
    xtuner_checkpoint: str | None = Field(
        None, description="instead of training: an xtuner iter_N.pth (local path or s3:// object)"
    )
    base_model: InputRef | str | None = Field(
        None, description="the Sa2VAModel folder iter_N.pth overlays: artifact, s3:// URI or local folder"
    )
    base_preset: str | None = Field(
        None, description="instead of base_model: a preset with random weights (tests, demos)"
    )
    base_seed: int = 0
    allow_missing_keys: bool = Field(False, description="iter_N.pth may lack trained tensors; they keep base values")
    trust_pickle: bool = Field(
        False,
        description="unpickle an iter_N.pth or DeepSpeed rank file that holds Python objects besides tensors "
        "(and, for DeepSpeed, its own types)",
    )
    dataset: InputRef | str = Field(description="data-prep artifact; its validation images are the parity probe")
    output: OutputConfig = Field(default_factory=OutputConfig)
    parity: ParityConfig = Field(default_factory=ParityConfig)
    prefix: str = "vesselseg/models"

    @model_validator(mode="after")
    def _one_source(self) -> Config:
        if (self.training is None) == (self.xtuner_checkpoint is None):
            raise ValueError("give exactly one of training (DeepSpeed run) and xtuner_checkpoint")
        if self.xtuner_checkpoint is not None and (self.base_model is None) == (self.base_preset is None):
            raise ValueError("an xtuner_checkpoint needs exactly one of base_model and base_preset")
        return self


class Result(BaseModel):
    model: InputRef
    parity: ParityReport
    summary: dict[str, Any]


def _is_uri(value: InputRef | str) -> bool:
    return isinstance(value, InputRef) or value.startswith("s3://")


def _fetch_training(store: ObjectStore, ref: InputRef, local: Path, tag: str | None) -> str:
    """Downloads model/ and the one checkpoint tag needed (not every saved tag); returns the tag."""
    paths = [f.path for f in read_manifest(store, ref).files]
    saved = sorted({p.split("/")[1] for p in paths if p.startswith(f"{CHECKPOINT_DIR}/") and p.count("/") >= 2})
    latest = None
    if tag is None and f"{CHECKPOINT_DIR}/{LATEST}" in paths:
        # Through fetch_dir, so `latest` is checked against the manifest like every other fetched file.
        fetch_dir(store, ref, local, only=[f"{CHECKPOINT_DIR}/{LATEST}"])
        latest = (local / CHECKPOINT_DIR / LATEST).read_text()
    tag = choose_tag(tag, latest, saved, f"{ref.uri.rstrip('/')}/{CHECKPOINT_DIR}")
    fetch_dir(store, ref, local, only=[p for p in paths if p.startswith((f"{MODEL_DIR}/", f"{CHECKPOINT_DIR}/{tag}/"))])
    return tag


def _base_folder(config: Config, store: ObjectStore, scratch: Path, inputs: dict[str, InputRef]) -> Path:
    if config.base_preset is not None:
        import torch

        from vesselseg.model import build_preset

        torch.manual_seed(config.base_seed)
        model, processor = build_preset(config.base_preset)
        folder = scratch / "base"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        return folder
    assert config.base_model is not None
    if not _is_uri(config.base_model):
        return Path(config.base_model)
    inputs["base_model"] = resolve(store, config.base_model)
    fetch_dir(store, inputs["base_model"], scratch / "base")
    return scratch / "base"


def _checkpoint_input(
    config: Config, store: ObjectStore, scratch: Path, inputs: dict[str, InputRef]
) -> DeepSpeedInput | XtunerInput:
    if config.training is not None:
        if not _is_uri(config.training):
            return DeepSpeedInput(Path(config.training), config.tag, config.trust_pickle)
        inputs["training"] = resolve(store, config.training)
        tag = _fetch_training(store, inputs["training"], scratch / "training", config.tag)
        return DeepSpeedInput(scratch / "training", tag, config.trust_pickle)
    assert config.xtuner_checkpoint is not None
    checkpoint = Path(config.xtuner_checkpoint)
    if config.xtuner_checkpoint.startswith("s3://"):
        checkpoint = scratch / "xtuner" / Path(config.xtuner_checkpoint).name
        store.download_file(store.key_of(config.xtuner_checkpoint), checkpoint)
    return XtunerInput(
        checkpoint, _base_folder(config, store, scratch, inputs), config.allow_missing_keys, config.trust_pickle
    )


def _local_fingerprints(config: Config) -> dict[str, str]:
    """Local inputs have no manifest hash; their contents stand in for it, so that retraining into the same folder
    (same path, same tag) gives a new artifact instead of overwriting the old one under the same key."""
    named = {
        "training": config.training,
        "xtuner_checkpoint": config.xtuner_checkpoint,
        "base_model": config.base_model,
    }
    return {name: local_fingerprint(Path(value)) for name, value in named.items() if value and not _is_uri(value)}


def _summary(checkpoint: DeepSpeedInput | XtunerInput, saved, report: ParityReport) -> dict[str, Any]:
    return {
        "source": checkpoint.facts,
        "dtype": saved.dtype,
        "shards": len(saved.shards),
        "weight_bytes": saved.weight_bytes,
        "num_parameters": saved.num_parameters,
        "untied_embeddings": saved.untied,
        "parity": {
            "passed": report.passed,
            "dtype": report.dtype,
            "tolerance": report.tolerance,
            "probe_ids": report.probe_ids,
            **{
                name: {
                    "max_abs_error": o.max_abs_error,
                    "max_rel_error": o.max_rel_error,
                    "rounding_floor": o.rounding_floor,
                    "tolerance": o.tolerance,
                }
                for name, o in report.outputs.items()
            },
        },
    }


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    started = time.perf_counter()
    dataset_ref = resolve(store, config.dataset)
    inputs: dict[str, InputRef] = {"dataset": dataset_ref}
    local_inputs = _local_fingerprints(config)
    with scratch_dir(NAME) as scratch:
        checkpoint = _checkpoint_input(config, store, scratch, inputs)
        fetched = time.perf_counter()
        out = scratch / "out"
        saved = convert_checkpoint(checkpoint, out, config.output)
        converted = time.perf_counter()
        split = config.parity.split
        dataset = fetch_dataset(store, dataset_ref, scratch / "dataset", [split], [split])
        report = verify_parity(checkpoint, out, dataset, config.parity, config.output.dtype)
        raise_unless_passed(report, out)
        checked = time.perf_counter()
        if isinstance(checkpoint, XtunerInput) and checkpoint.report is not None:
            (out / OVERLAY_FILE).write_text(checkpoint.report.model_dump_json(indent=2))
        summary = _summary(checkpoint, saved, report)
        key = content_key(
            config.model_dump(mode="json", exclude={"prefix"}),
            sorted(r.manifest_sha256 for r in inputs.values()),
            local_inputs,
            checkpoint.facts,
        )
        ref, _ = publish_dir(
            store,
            out,
            f"{config.prefix.strip('/')}/{key}",
            kind="model",
            stage=NAME,
            config=config.model_dump(mode="json"),
            inputs=inputs,
            timings_s={
                "fetch": fetched - started,
                "convert": converted - fetched,
                "parity": checked - converted,
                "publish": time.perf_counter() - checked,
            },
            summary=summary,
        )
    log.info("model published at %s (parity %s)", ref.uri, "passed" if report.passed else "FAILED")
    return Result(model=ref, parity=report, summary=summary)


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    errors = {
        f"{name}.{what}": getattr(output, what)
        for name, output in result.parity.outputs.items()
        for what in ("max_abs_error", "max_rel_error", "tolerance")
    }
    return {
        "model": Pointer(result.model, {"dtype": result.summary["dtype"], "parity_passed": result.parity.passed}),
        # Unrounded: a parity error of 1e-9 is the point, not 0.
        "parity": Metrics(errors, digits=None),
    }


STAGE = Stage(
    name=NAME,
    description="DeepSpeed checkpoint → Hugging Face folder (safetensors shards), published only if parity with "
    "the training-time model holds on the validation probe; `model` points at the folder, `parity` holds the errors "
    "per output.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=(Input("training", "Artifact", "training"), Input("dataset", "Dataset", "dataset")),
    outputs=(Output("model", "Model"), Output("parity", "Metrics")),
)

"""visualize: the HTML report, Markdown summary, panels and plots of one evaluated run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.errors import DataError, StorageError
from vesselseg.stages.contract import SCORED_INPUTS, Emitted, File, Input, Output, Pointer, Stage
from vesselseg.stages.inputs import fetch_dataset, fetch_predictions, resolve_test_labels
from vesselseg.stages.scratch import scratch_dir
from vesselseg.stages.test_labels import label_store
from vesselseg.storage import InputRef, Manifest, ObjectStore, fetch_dir, publish_dir, read_manifest, resolve
from vesselseg.storage.artifact import content_key
from vesselseg.visualize import ReportConfig, build_report

NAME = "visualize"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    dataset: InputRef | str
    test_labels: InputRef | str | None = Field(
        None, description="data-prep's test-label artifact: needed whenever the test split is drawn"
    )
    predictions: list[InputRef | str] = Field(min_length=1)
    evaluation: InputRef | str
    training: InputRef | str | None = Field(None, description="a fine-tuning artifact whose train_log.jsonl is drawn")
    report: ReportConfig = Field(default_factory=ReportConfig)
    prefix: str = "vesselseg/reports"


class Result(BaseModel):
    report: InputRef
    html_key: str
    markdown_key: str


def _provenance(store: ObjectStore, refs: dict[str, InputRef]) -> dict[str, Any]:
    """Every input's URI, manifest hash, producing stage, code version and config: the report's footnotes."""
    entries = {}
    for name, ref in refs.items():
        manifest = read_manifest(store, ref)
        entries[name] = {
            "uri": ref.uri,
            "manifest_sha256": ref.manifest_sha256,
            "stage": manifest.stage,
            "code_version": manifest.code_version,
            "created_at": manifest.created_at,
            "config": manifest.config,
        }
        # The converted model behind a prediction set: its parity check is the proof these are the trained weights.
        if "model" in manifest.inputs:
            model_ref = manifest.inputs["model"]
            model = read_manifest(store, model_ref)
            entries[f"{name} model"] = {
                "uri": model_ref.uri,
                "manifest_sha256": model_ref.manifest_sha256,
                "stage": model.stage,
                "parity": model.summary.get("parity"),
                "inputs": {key: value.uri for key, value in model.inputs.items()},
            }
    return entries


def _test_label_access(store: ObjectStore, refs: dict[str, InputRef], labels: InputRef | None) -> list[dict[str, Any]]:
    """Every task upstream of this report, read from the artifacts' manifests (the run's DAG as it executed):
    the stage, the artifact it published, its inputs, and whether the test labels were among them."""
    labels_store = label_store(store)
    producer = read_manifest(labels_store, labels).stage if labels is not None else None
    tasks: dict[str, dict[str, Any]] = {}
    pending = [ref for name, ref in refs.items() if name != "test_labels"]
    while pending:
        ref = pending.pop()
        if ref.uri in tasks or not ref.uri.startswith(f"s3://{store.bucket}/"):
            continue
        try:
            manifest = read_manifest(store, ref)
        except StorageError as err:
            tasks[ref.uri] = {
                "stage": "?",
                "artifact": ref.uri,
                "inputs": [],
                "read_test_labels": None,
                "note": str(err),
            }
            continue
        reads = any(i.uri.startswith(f"s3://{labels_store.bucket}/") for i in manifest.inputs.values())
        tasks[ref.uri] = {
            "stage": manifest.stage,
            "artifact": ref.uri,
            "kind": manifest.kind,
            "inputs": sorted(manifest.inputs),
            "read_test_labels": reads,
        }
        pending.extend(manifest.inputs.values())
    rows = sorted(tasks.values(), key=lambda row: (not row["read_test_labels"], row["stage"]))
    if producer is not None:
        rows.insert(0, {"stage": producer, "artifact": labels.uri, "kind": "test-labels", "inputs": [],
                        "read_test_labels": True, "note": "wrote them"})  # fmt: skip
    rows.append({"stage": NAME, "artifact": "(this report)", "kind": "report", "inputs": sorted(refs),
                 "read_test_labels": labels is not None})  # fmt: skip
    return rows


def _check_evaluated(
    evaluation: Manifest, where: InputRef, dataset: InputRef, predictions: list[InputRef], labels: InputRef | None
) -> None:
    """The report draws the evaluation's per-image numbers beside the maps it is given: both must be of the inputs
    the evaluation's manifest pins (by hash), or the pictures would show other predictions than the numbers."""
    pinned = {name: ref.manifest_sha256 for name, ref in evaluation.inputs.items()}
    scored = {sha for name, sha in pinned.items() if name.startswith("predictions:")}
    others = [f"prediction set {r.uri}" for r in predictions if r.manifest_sha256 not in scored]
    if pinned.get("dataset") != dataset.manifest_sha256:
        others.insert(0, f"dataset {dataset.uri}")
    if labels is not None and pinned.get("test_labels") != labels.manifest_sha256:
        others.append(f"test labels {labels.uri}")
    if others:
        raise DataError(
            f"the evaluation {where.uri} did not score the {', '.join(others)}: its manifest pins other inputs; "
            "give the report the inputs that evaluation scored"
        )


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    started = time.perf_counter()
    refs = {"dataset": resolve(store, config.dataset), "evaluation": resolve(store, config.evaluation)}
    prediction_refs = [resolve(store, p) for p in config.predictions]
    refs.update({f"predictions[{i}]": r for i, r in enumerate(prediction_refs)})
    if config.training is not None:
        refs["training"] = resolve(store, config.training)
    labels_ref = resolve_test_labels(store, config.test_labels)
    evaluation = read_manifest(store, refs["evaluation"])
    _check_evaluated(evaluation, refs["evaluation"], refs["dataset"], prediction_refs, labels_ref)
    split = evaluation.config.get("evaluate", {}).get("split", "test")
    with scratch_dir(NAME) as scratch:
        dataset = fetch_dataset(store, refs["dataset"], scratch / "dataset", [split], [split], labels_ref)
        sets = [fetch_predictions(store, r, scratch / f"predictions{i}") for i, r in enumerate(prediction_refs)]
        fetch_dir(store, refs["evaluation"], scratch / "evaluation")
        train_log: Path | None = None
        if "training" in refs:
            fetch_dir(store, refs["training"], scratch / "training", only=["train_log.jsonl"])
            train_log = scratch / "training" / "train_log.jsonl"
        provenance = {
            "dataset_fingerprint": dataset.fingerprint,
            "artifacts": _provenance(store, refs),
            "test_label_access": _test_label_access(store, refs, labels_ref),
        }
        fetched = time.perf_counter()
        result = build_report(
            dataset,
            sets,
            scratch / "evaluation",
            scratch / "out",
            provenance=provenance,
            train_log=train_log,
            config=config.report,
        )
        drawn = time.perf_counter()
        if labels_ref is not None:
            refs["test_labels"] = labels_ref
        key = content_key(config.report.model_dump(mode="json"), sorted(r.manifest_sha256 for r in refs.values()))
        prefix = f"{config.prefix.strip('/')}/{key}"
        ref, _ = publish_dir(
            store,
            scratch / "out",
            prefix,
            kind="report",
            stage=NAME,
            config=config.model_dump(mode="json"),
            inputs=refs,
            timings_s={"fetch": fetched - started, "draw": drawn - fetched, "publish": time.perf_counter() - drawn},
            summary={"featured": result.featured, "n_images": result.n_images},
        )
    return Result(report=ref, html_key=f"{prefix}/report.html", markdown_key=f"{prefix}/summary.md")


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    """KFP's UI shows `html` and `markdown` inline; `report` points at the whole folder."""
    return {
        "report": Pointer(result.report),
        "html": File(store.get_bytes(result.html_key)),
        "markdown": File(store.get_bytes(result.markdown_key)),
    }


STAGE = Stage(
    name=NAME,
    description="Panels, plots (training curves included) and the self-contained HTML report of the evaluated run.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=(
        *SCORED_INPUTS,
        Input("evaluation", "Artifact", "evaluation"),
        Input("training", "Model", "training"),
    ),
    outputs=(Output("report", "Artifact"), Output("html", "HTML"), Output("markdown", "Markdown")),
)

"""What KFP component bodies call: one adapter that runs any stage from its contract (vesselseg.stages.contract).

It builds the stage's config from the component's arguments (parameters, the `InputRef` each input artifact holds,
the run's overrides, the operator's opt-ins), runs the stage (or has a Kubeflow TrainJob run it, when the cluster
config says so), and fills each output from what the stage's `emit` returns. Multi-GB payloads stay in the object
store; the KFP artifact passed between tasks holds only the `InputRef` (URI + manifest sha256) of the published
artifact, so KFP's launcher moves kilobytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from vesselseg.opt_ins import apply_opt_ins, refuse_in_parameters
from vesselseg.stages import stage_contract
from vesselseg.stages.contract import Classification, Emitted, File, Metrics, Pointer, Stage
from vesselseg.storage import InputRef

log = logging.getLogger(__name__)


class KfpArtifact(Protocol):
    """The part of `dsl.Artifact` used here (kept structural so the library does not import kfp)."""

    path: str
    uri: str
    metadata: dict[str, Any]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_ref(artifact: KfpArtifact) -> InputRef:
    return InputRef.model_validate_json(Path(artifact.path).read_text())


def stage_data(stage: Stage, arguments: dict[str, Any], fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stage's config data: its parameters and wired inputs (and `fixed`), the run's overrides, then the operator's
    opt-ins. Overrides are run parameters: they may not set an opt-in nor replace an input the DAG wires."""
    base: dict[str, Any] = dict(fixed or {})
    for parameter in stage.parameters:
        for dotted in parameter.fields:
            *parents, leaf = dotted.split(".")
            node = base
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = arguments[parameter.name]
    for item in stage.inputs:
        artifact = arguments[item.name]
        value = read_ref(artifact).model_dump() if artifact is not None else None
        if item.many:
            base.setdefault(item.field, []).append(value)
        else:
            base[item.field] = value
    overrides = arguments.get("overrides") or {}
    refuse_in_parameters(stage.overrides_parameter, overrides, stage.wired)
    return apply_opt_ins(stage.name, deep_merge(base, overrides))


def _write(artifact: Any, value: Emitted) -> None:
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, Pointer):
        Path(artifact.path).write_text(value.ref.model_dump_json(indent=2))
        artifact.metadata.update({"store_uri": value.ref.uri, "manifest_sha256": value.ref.manifest_sha256})
        artifact.metadata.update(value.metadata)
        return
    if isinstance(value, File):
        Path(artifact.path).write_bytes(value.data)
        artifact.metadata.update(value.metadata)
        return
    if isinstance(value, Metrics):
        for name, number in value.values.items():
            if isinstance(number, int) or (number is not None and value.digits is None):
                artifact.log_metric(name, number)
            elif number is not None:
                artifact.log_metric(name, round(float(number), value.digits))
    elif isinstance(value, Classification):
        artifact.log_roc_curve(value.fpr, value.tpr, value.thresholds)
        artifact.log_confusion_matrix(value.labels, value.matrix)
        artifact.metadata.update(value.metadata)
    # KFP keeps metrics in metadata only; a file at the path lets kfp.local's cache see the output exists.
    Path(artifact.path).write_text(json.dumps(artifact.metadata, indent=2))


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_stage(name: str, arguments: dict[str, Any]) -> BaseModel:
    """The body of every stage's component: `arguments` are the component's own (its `locals()`)."""
    from vesselseg.cluster.trainjob import launch, launcher_from_env
    from vesselseg.storage import ObjectStore

    _logging()
    stage = stage_contract(name)
    config = stage.config.model_validate(stage_data(stage, arguments))
    if (cluster := launcher_from_env()) is not None:
        result = stage.result.model_validate(launch(stage.name, config, cluster))
    else:
        result = stage.run(config)
    emitted = stage.emit(result, ObjectStore())
    for output in stage.outputs:
        _write(arguments[output.name], emitted[output.name])
    return result


def run_infer_shard(
    model: KfpArtifact, dataset: KfpArtifact, overrides: dict[str, Any], shard_index: int, shard_count: int
) -> int:
    """One slice of the micro-batches into the shared resume state (dsl.ParallelFor); returns images predicted."""
    _logging()
    stage = stage_contract("infer")
    arguments = {"model": model, "dataset": dataset, "overrides": overrides}
    shard = {"shard": {"index": shard_index, "count": shard_count}}
    return stage.run(stage.config.model_validate(stage_data(stage, arguments, shard))).stats.computed

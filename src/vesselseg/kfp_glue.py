"""What KFP component bodies call: build a stage config from component parameters, run the stage,
and write small pointer artifacts.

Multi-GB payloads stay in the object store; the KFP artifact passed between tasks holds only the
`InputRef` (URI + manifest sha256) of the published artifact, so KFP's launcher moves kilobytes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from vesselseg.opt_ins import apply_opt_ins, refuse_in_parameters
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


def stage_data(
    stage: str, base: dict[str, Any], overrides: dict[str, Any], wired: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A stage's config data: `base` (the wired inputs among it), the run's overrides, then the operator's opt-ins.

    Overrides are run parameters: they may not set an opt-in nor replace an input the DAG wires.
    """
    refuse_in_parameters(f"{stage}_overrides", overrides, wired)
    return apply_opt_ins(stage, deep_merge(base, overrides))


def write_ref(artifact: KfpArtifact, ref: InputRef, **metadata: Any) -> None:
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(artifact.path).write_text(ref.model_dump_json(indent=2))
    artifact.metadata.update({"store_uri": ref.uri, "manifest_sha256": ref.manifest_sha256, **metadata})


def read_ref(artifact: KfpArtifact) -> InputRef:
    return InputRef.model_validate_json(Path(artifact.path).read_text())


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_data_prep(
    source: str, seed: int, overrides: dict[str, Any], dataset: KfpArtifact, test_labels: KfpArtifact
) -> None:
    """Two outputs: the dataset every later task may read, and the test split's ground truth for the scorers only."""
    from vesselseg.stages import data_prep

    _logging()
    config = data_prep.Config.model_validate(
        stage_data(
            "data_prep", {"data": {"source": source, "synthetic": {"seed": seed}, "split": {"seed": seed}}}, overrides
        )
    )
    result = data_prep.run(config)
    write_ref(
        dataset,
        result.dataset,
        fingerprint=result.summary.fingerprint,
        splits=json.dumps({name: stats.n_images for name, stats in result.summary.splits.items()}),
    )
    write_ref(test_labels, result.test_labels, fingerprint=result.summary.fingerprint, split="test")


def run_baseline(dataset: KfpArtifact, overrides: dict[str, Any], predictions: KfpArtifact) -> None:
    from vesselseg.stages import baseline

    _logging()
    config = baseline.Config.model_validate(
        stage_data("baseline", {"dataset": read_ref(dataset).model_dump()}, overrides, ("dataset",))
    )
    result = baseline.run(config)
    write_ref(predictions, result.predictions, predictor=result.info.name, threshold=result.info.threshold)


def run_evaluate(
    dataset: KfpArtifact,
    test_labels: KfpArtifact,
    predictions: list[KfpArtifact],
    overrides: dict[str, Any],
    evaluation: KfpArtifact,
    summary: KfpArtifact,
    metrics: Any,
    roc: Any,
) -> None:
    """Score, then fill KFP's Metrics (scalars per predictor) and ClassificationMetrics (ROC, confusion)."""
    from vesselseg.stages import evaluate

    _logging()
    config = evaluate.Config.model_validate(
        stage_data(
            "evaluate",
            {
                "dataset": read_ref(dataset).model_dump(),
                "test_labels": read_ref(test_labels).model_dump(),
                "predictions": [read_ref(p).model_dump() for p in predictions],
            },
            overrides,
            ("dataset", "test_labels", "predictions"),
        )
    )
    result = evaluate.run(config)
    write_ref(evaluation, result.evaluation)
    Path(summary.path).write_text(result.summary.model_dump_json(indent=2))
    _log_metrics(
        metrics,
        {f"{predictor}.{name}": value for predictor, values in result.summary.metrics.items()
         for name, value in values.items()},
    )  # fmt: skip
    primary = next(iter(result.summary.thresholds))
    _log_classification(result.evaluation, primary, roc)
    _write_metadata(roc)


def _log_metrics(metrics: Any, values: dict[str, float | None]) -> None:
    """Logs every value that exists, rounded, into a KFP Metrics artifact, and writes its file."""
    for name, value in values.items():
        if value is not None:
            metrics.log_metric(name, round(float(value), 6))
    _write_metadata(metrics)


def _write_metadata(artifact: Any) -> None:
    # KFP keeps metrics in metadata only; a file at the path lets kfp.local's cache see the output exists.
    Path(artifact.path).write_text(json.dumps(artifact.metadata, indent=2))


def _log_classification(evaluation: InputRef, predictor: str, roc: Any) -> None:
    from vesselseg.storage import ObjectStore

    store = ObjectStore()
    prefix = store.key_of(evaluation.uri)
    curves = json.loads(store.get_bytes(prefix + "curves.json"))[predictor]["roc"]
    # The first point's threshold (256/255) stands for "nothing positive"; KFP wants thresholds in [0, 1].
    roc.log_roc_curve(curves["fpr"], curves["tpr"], [min(t, 1.0) for t in curves["thresholds"]])
    aggregate = json.loads(store.get_bytes(prefix + "aggregate.json"))["aggregates"][predictor]["selected"]["micro"]
    roc.log_confusion_matrix(
        ["background", "vessel"],
        [[aggregate["tn"], aggregate["fp"]], [aggregate["fn"], aggregate["tp"]]],
    )
    roc.metadata["predictor"] = predictor


def run_visualize(
    dataset: KfpArtifact,
    test_labels: KfpArtifact,
    predictions: list[KfpArtifact],
    evaluation: KfpArtifact,
    training: KfpArtifact | None,
    overrides: dict[str, Any],
    report: KfpArtifact,
    html: KfpArtifact,
    markdown: KfpArtifact,
) -> None:
    """Draw the report; KFP's UI shows `html` and `markdown` inline, `report` points at the whole folder."""
    from vesselseg.stages import visualize
    from vesselseg.storage import ObjectStore

    _logging()
    config = visualize.Config.model_validate(
        stage_data(
            "visualize",
            {
                "dataset": read_ref(dataset).model_dump(),
                "test_labels": read_ref(test_labels).model_dump(),
                "predictions": [read_ref(p).model_dump() for p in predictions],
                "evaluation": read_ref(evaluation).model_dump(),
                "training": read_ref(training).model_dump() if training is not None else None,
            },
            overrides,
            ("dataset", "test_labels", "predictions", "evaluation", "training"),
        )
    )
    result = visualize.run(config)
    write_ref(report, result.report)
    store = ObjectStore()
    for artifact, key in ((html, result.html_key), (markdown, result.markdown_key)):
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact.path).write_bytes(store.get_bytes(key))


def run_infer(model: KfpArtifact, dataset: KfpArtifact, overrides: dict[str, Any], predictions: KfpArtifact) -> None:
    """Probability maps of the val/test images; the strategy (auto by default) and batch come from overrides."""
    from vesselseg.stages import infer

    _logging()
    config = infer.Config.model_validate(
        stage_data(
            "infer",
            {"model": read_ref(model).model_dump(), "dataset": read_ref(dataset).model_dump()},
            overrides,
            ("model", "dataset", "shard"),
        )
    )
    result = infer.run(config)
    write_ref(
        predictions,
        result.predictions,
        predictor=result.info.name,
        strategy=result.plan.strategy,
        plan=result.plan.describe(),
        images_per_s=round(result.stats.images_per_s, 3),
        zero_seg_images=result.summary["zero_seg_images"],
    )


def run_infer_shard(
    model: KfpArtifact, dataset: KfpArtifact, overrides: dict[str, Any], shard_index: int, shard_count: int
) -> int:
    """One slice of the micro-batches into the shared resume state (dsl.ParallelFor); returns images predicted."""
    from vesselseg.stages import infer

    _logging()
    config = infer.Config.model_validate(
        stage_data(
            "infer",
            {
                "model": read_ref(model).model_dump(),
                "dataset": read_ref(dataset).model_dump(),
                "shard": {"index": shard_index, "count": shard_count},
            },
            overrides,
            ("model", "dataset", "shard"),
        )
    )
    return infer.run(config).stats.computed


def run_convert(
    training: KfpArtifact, dataset: KfpArtifact, overrides: dict[str, Any], model: KfpArtifact, parity: Any
) -> None:
    """Convert and verify; `model` points at the published folder, `parity` (KFP Metrics) holds the errors."""
    from vesselseg.stages import convert

    _logging()
    config = convert.Config.model_validate(
        stage_data(
            "convert",
            {"training": read_ref(training).model_dump(), "dataset": read_ref(dataset).model_dump()},
            overrides,
            ("training", "dataset"),
        )
    )
    result = convert.run(config)
    write_ref(model, result.model, dtype=result.summary["dtype"], parity_passed=result.parity.passed)
    for name, output in result.parity.outputs.items():
        parity.log_metric(f"{name}.max_abs_error", output.max_abs_error)
        parity.log_metric(f"{name}.max_rel_error", output.max_rel_error)
        parity.log_metric(f"{name}.tolerance", output.tolerance)
    _write_metadata(parity)


def run_finetune(dataset: KfpArtifact, overrides: dict[str, Any], training: KfpArtifact, metrics: Any) -> None:
    """Train (here, or as a Kubeflow TrainJob when the cluster config says so); KFP Metrics get the final numbers."""
    from vesselseg.cluster.trainjob import launch, launcher_from_env
    from vesselseg.stages import finetune

    _logging()
    config = finetune.Config.model_validate(
        stage_data("finetune", {"dataset": read_ref(dataset).model_dump()}, overrides, ("dataset",))
    )
    if (cluster := launcher_from_env()) is not None:
        result = finetune.Result.model_validate(launch("finetune", config, cluster))
    else:
        result = finetune.run(config)
    write_ref(training, result.training, run_key=result.summary.run_key, final_step=result.summary.final_step)
    summary = result.summary
    _log_metrics(
        metrics,
        {
            "final_loss": summary.final_loss,
            "best_val_dice": summary.best_val_dice,
            "last_val_dice": summary.last_val_dice,
            "train_s": summary.train_s,
            "samples_per_s": summary.mean_samples_per_s,
        },
    )

"""evaluate: score prediction sets on the test split beside trivial baselines, with honesty checks."""

from __future__ import annotations

import json
import time

from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.evaluate import EvaluateConfig, EvaluationSummary, evaluate
from vesselseg.stages.contract import SCORED_INPUTS, Classification, Emitted, File, Metrics, Output, Pointer, Stage
from vesselseg.stages.inputs import fetch_dataset, fetch_predictions, resolve_test_labels
from vesselseg.stages.scratch import scratch_dir
from vesselseg.storage import InputRef, ObjectStore, publish_dir, resolve
from vesselseg.storage.artifact import content_key

NAME = "evaluate"


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    dataset: InputRef | str
    test_labels: InputRef | str | None = Field(
        None, description="data-prep's test-label artifact: needed whenever the test split is scored"
    )
    predictions: list[InputRef | str] = Field(min_length=1)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    prefix: str = "vesselseg/evaluations"


class Result(BaseModel):
    evaluation: InputRef
    summary: EvaluationSummary


def run(config: Config, store: ObjectStore | None = None) -> Result:
    store = store or ObjectStore()
    started = time.perf_counter()
    dataset_ref = resolve(store, config.dataset)
    labels_ref = resolve_test_labels(store, config.test_labels)
    prediction_refs = [resolve(store, p) for p in config.predictions]
    splits = sorted({config.evaluate.split, config.evaluate.threshold_split})
    with scratch_dir(NAME) as scratch:
        dataset = fetch_dataset(store, dataset_ref, scratch / "dataset", splits, splits, labels_ref, images=False)
        sets = [fetch_predictions(store, ref, scratch / f"predictions{i}") for i, ref in enumerate(prediction_refs)]
        fetched = time.perf_counter()
        summary = evaluate(dataset, sets, config.evaluate, scratch / "out")
        scored = time.perf_counter()
        labels = {"test_labels": labels_ref} if labels_ref is not None else {}
        inputs = {
            "dataset": dataset_ref,
            **labels,
            **{f"predictions:{s.info.name}": r for s, r in zip(sets, prediction_refs)},
        }
        key = content_key(config.evaluate.model_dump(mode="json"), sorted(r.manifest_sha256 for r in inputs.values()))
        ref, _ = publish_dir(
            store,
            scratch / "out",
            f"{config.prefix.strip('/')}/{key}",
            kind="evaluation",
            stage=NAME,
            config=config.model_dump(mode="json"),
            inputs=inputs,
            timings_s={"fetch": fetched - started, "score": scored - fetched, "publish": time.perf_counter() - scored},
            summary={
                "metrics": summary.metrics,
                "thresholds": {k: v.model_dump() for k, v in summary.thresholds.items()},
            },
        )
    return Result(evaluation=ref, summary=summary)


def _roc(store: ObjectStore, evaluation: InputRef, predictor: str) -> Classification:
    prefix = store.key_of(evaluation.uri)
    curves = json.loads(store.get_bytes(prefix + "curves.json"))[predictor]["roc"]
    micro = json.loads(store.get_bytes(prefix + "aggregate.json"))["aggregates"][predictor]["selected"]["micro"]
    return Classification(
        fpr=curves["fpr"],
        tpr=curves["tpr"],
        # The first point's threshold (256/255) stands for "nothing positive"; KFP wants thresholds in [0, 1].
        thresholds=[min(t, 1.0) for t in curves["thresholds"]],
        labels=["background", "vessel"],
        matrix=[[micro["tn"], micro["fp"]], [micro["fn"], micro["tp"]]],
        metadata={"predictor": predictor},
    )


def emit(result: Result, store: ObjectStore) -> dict[str, Emitted]:
    """KFP's Metrics get the scalars per predictor, ClassificationMetrics the primary predictor's ROC and confusion."""
    summary = result.summary
    values = {f"{predictor}.{name}": value for predictor, metrics in summary.metrics.items()
              for name, value in metrics.items()}  # fmt: skip
    return {
        "evaluation": Pointer(result.evaluation),
        "summary": File(summary.model_dump_json(indent=2).encode()),
        "metrics": Metrics(values),
        "roc": _roc(store, result.evaluation, next(iter(summary.thresholds))),
    }


STAGE = Stage(
    name=NAME,
    description="Score the model and the baseline on the test split beside all-background/all-foreground, with "
    "honesty checks.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=SCORED_INPUTS,
    outputs=(
        Output("evaluation", "Artifact"),
        Output("summary", "Artifact"),
        Output("metrics", "Metrics"),
        Output("roc", "ClassificationMetrics"),
    ),
)

"""Score prediction sets on one split: threshold from validation, trivial baselines, honesty checks.

Writes into `out_dir`:
```
per_image.parquet / per_image.csv   one row per (predictor, image, threshold kind)
aggregate.json                      micro + macro (bootstrap CI) per predictor and baseline, checks
curves.json                         pooled ROC and PR points per predictor
summary.json                        the short form scripts read: {"metrics": {predictor: {dice, …}}, …}
```
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.data import PreparedDataset
from vesselseg.errors import DataError, HonestyError
from vesselseg.evaluate import honesty
from vesselseg.evaluate.honesty import HonestyCheck
from vesselseg.evaluate.plausibility import PlausibilityConfig, human_ceiling, plausibility_checks
from vesselseg.metrics import (
    SCORE_NAMES,
    ProbabilityMap,
    aggregate,
    best_threshold,
    constant_prediction,
    evaluate_image,
    image_counts,
    level,
    pool,
    pr_curve_points,
    roc_curve_points,
    threshold_of,
)
from vesselseg.predictions import PredictionSet

log = logging.getLogger(__name__)

SUMMARY_METRICS = (*SCORE_NAMES, "auc", "ap", "cldice", "betti0_error", "betti1_error")
TRIVIAL = {"all_background": 0, "all_foreground": 255}


class EvaluateConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    split: str = Field("test", description="split the reported numbers come from")
    threshold_split: str = Field("val", description="split the decision threshold is chosen on (max pooled Dice)")
    n_boot: int = Field(1000, ge=1)
    seed: int = Field(0, ge=0)
    allow_identical_to_truth: bool = False
    allow_truth_in_provenance: bool = False
    allow_train_test_overlap: bool = False
    allow_missing_predictions: bool = False
    allow_size_mismatch: bool = False
    allow_threshold_on_scored_split: bool = False
    allow_subset_of_truth: bool = False
    allow_superset_of_truth: bool = False
    allow_beyond_human_agreement: bool = False
    allow_noise_like_errors: bool = False
    plausibility: PlausibilityConfig = Field(default_factory=PlausibilityConfig)


class ThresholdChoice(BaseModel):
    level: int
    threshold: float
    source: str
    selection_dice: float | None = None


class EvaluationSummary(BaseModel):
    split: str
    n_images: int
    averaging: str
    vessel_fraction: float
    fov: str
    metrics: dict[str, dict[str, float | None]]
    metrics_micro: dict[str, dict[str, float | None]]
    dice_ci: dict[str, list[float | None]]
    metrics_at_0_5: dict[str, dict[str, float | None]]
    thresholds: dict[str, ThresholdChoice]
    honesty: list[HonestyCheck]


def _clean(value: Any) -> Any:
    """NaN → None so the JSON is strict (browsers and jq reject NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _allowed(config: EvaluateConfig, check: HonestyCheck) -> HonestyCheck:
    switch = {
        "prediction_identical_to_truth": config.allow_identical_to_truth,
        "truth_in_provenance": config.allow_truth_in_provenance,
        "train_test_overlap": config.allow_train_test_overlap,
        "missing_predictions": config.allow_missing_predictions,
        "size_mismatch": config.allow_size_mismatch,
        "threshold_on_scored_split": config.allow_threshold_on_scored_split,
        "subset_of_truth": config.allow_subset_of_truth,
        "superset_of_truth": config.allow_superset_of_truth,
        "beyond_human_agreement": config.allow_beyond_human_agreement,
        "noise_like_errors": config.allow_noise_like_errors,
    }[check.name]
    return check.model_copy(update={"allowed": switch})


def _choose_threshold(dataset: PreparedDataset, preds: PredictionSet, split: str) -> ThresholdChoice:
    ids = [i for i in dataset.ids(split) if i in preds]
    if not ids:
        return ThresholdChoice(
            level=level(0.5), threshold=0.5, source=f"fixed 0.5 (no {split} predictions to choose on)"
        )
    counts = [image_counts(preds.prob(i), dataset.mask(i), dataset.fov(i)) for i in ids]
    chosen, dice = best_threshold(counts)
    return ThresholdChoice(
        level=chosen,
        threshold=threshold_of(chosen),
        source=f"max pooled Dice on {len(ids)} {split} images",
        selection_dice=dice,
    )


def _summary_row(agg: dict[str, Any], key: str, calibrated: bool) -> dict[str, float | None]:
    row = {}
    for name in SUMMARY_METRICS:
        value = agg["macro"][name]["mean"] if key == "macro" else agg["micro"].get(name, agg["macro"][name]["mean"])
        if name in {"auc", "ap"} and not calibrated:
            value = float("nan")
        row[name] = value
    return _clean(row)


def evaluate(
    dataset: PreparedDataset, predictions: list[PredictionSet], config: EvaluateConfig, out_dir: Path
) -> EvaluationSummary:
    ids = dataset.ids(config.split)
    if not ids:
        raise DataError(f"dataset at {dataset.root} has no images in split {config.split!r}")
    names = [p.info.name for p in predictions]
    if len(set(names)) != len(names) or set(names) & set(TRIVIAL):
        raise DataError(f"predictor names must be unique and not {sorted(TRIVIAL)}: got {names}")
    out_dir.mkdir(parents=True, exist_ok=True)

    checks = [
        _allowed(config, honesty.train_test_overlap(dataset, config.split)),
        _allowed(config, honesty.threshold_on_scored_split(config.threshold_split, config.split)),
    ]
    thresholds = {p.info.name: _choose_threshold(dataset, p, config.threshold_split) for p in predictions}
    ceiling = human_ceiling(dataset, ids, config.plausibility)
    truths = {i: (dataset.mask(i), dataset.fov(i)) for i in ids}
    # Each map is decoded once; the checks and the scores below share the arrays. Images without a prediction or of
    # another size are left out here and reported by the coverage checks.
    maps: dict[str, dict[str, ProbabilityMap]] = {}
    for preds in predictions:
        decoded = {i: preds.prob(i) for i in ids if i in preds}
        maps[preds.info.name] = {i: m for i, m in decoded.items() if m.shape == truths[i][0].shape}
    for preds in predictions:
        name = preds.info.name
        checks.append(_allowed(config, honesty.identical_to_truth(name, maps[name], truths, ids)))
        checks.append(_allowed(config, honesty.truth_in_provenance(dataset, preds, config.split)))
        checks.extend(_allowed(config, c) for c in honesty.coverage(preds, truths, ids))
        level_scored = thresholds[name].level
        plausible = plausibility_checks(name, maps[name], truths, level_scored, ceiling, config.plausibility)
        checks.extend(_allowed(config, c) for c in plausible)
    blocking = [c for c in checks if c.blocking]
    (out_dir / "honesty.json").write_text(json.dumps([c.model_dump() for c in checks], indent=2))
    if blocking:
        raise HonestyError(
            "evaluation refused: "
            + "; ".join(f"{c.name}{f' [{c.predictor}]' if c.predictor else ''}: {c.detail}" for c in blocking)
            + " (set the matching allow_* option only if you know why)"
        )

    rows: list[dict[str, Any]] = []
    aggregates: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    calibrated: dict[str, bool] = {}

    for preds in predictions:
        name = preds.info.name
        calibrated[name] = preds.info.calibrated
        choice = thresholds[name]
        scored = {}
        # Only reachable with allow_missing_predictions / allow_size_mismatch: those images are left out.
        usable = [i for i in ids if i in maps[name]]
        for kind, decision in (("selected", choice.level), ("fixed_0.5", level(0.5))):
            results = []
            for sample_id in usable:
                truth, fov = truths[sample_id]
                result = evaluate_image(maps[name][sample_id], truth, fov, level=decision)
                results.append(result)
                rows.append(
                    {
                        "predictor": name,
                        "sample_id": sample_id,
                        "split": config.split,
                        "threshold_kind": kind,
                        **result.row(),
                    }
                )
            scored[kind] = aggregate(results, n_boot=config.n_boot, seed=config.seed)
            if kind == "selected":
                pooled = pool(r.counts for r in results)
        aggregates[name] = {"threshold": choice.model_dump(), "calibrated": preds.info.calibrated, **scored}
        roc, pr = roc_curve_points(pooled), pr_curve_points(pooled)
        curves[name] = {
            "roc": {"fpr": roc.fpr.tolist(), "tpr": roc.tpr.tolist(), "thresholds": roc.thresholds.tolist()},
            "pr": {
                "precision": pr.precision.tolist(),
                "recall": pr.recall.tolist(),
                "thresholds": pr.thresholds.tolist(),
            },
        }
        log.info(
            "%s: test Dice %.4f at threshold %.3f (%s)",
            name,
            scored["selected"]["macro"]["dice"]["mean"],
            choice.threshold,
            choice.source,
        )

    for name, value in TRIVIAL.items():
        results = []
        for sample_id in ids:
            truth, fov = truths[sample_id]
            result = evaluate_image(constant_prediction(truth, value, sample_id), truth, fov, level=level(0.5))
            results.append(result)
            rows.append(
                {
                    "predictor": name,
                    "sample_id": sample_id,
                    "split": config.split,
                    "threshold_kind": "fixed_0.5",
                    **result.row(),
                }
            )
        aggregates[name] = {
            "calibrated": False,
            "fixed_0.5": aggregate(results, n_boot=config.n_boot, seed=config.seed),
        }
        calibrated[name] = False

    table = pd.DataFrame(rows)
    table.to_parquet(out_dir / "per_image.parquet", index=False)
    table.to_csv(out_dir / "per_image.csv", index=False)

    def pick(name: str) -> dict[str, Any]:
        return aggregates[name].get("selected", aggregates[name]["fixed_0.5"])

    all_names = names + list(TRIVIAL)
    first = pick(all_names[0])
    summary = EvaluationSummary(
        split=config.split,
        n_images=len(ids),
        averaging=(
            "metrics: mean over images (macro) inside the FOV at the threshold chosen on "
            f"{config.threshold_split}; metrics_micro: pooled pixels; dice_ci: 95% bootstrap CI of the macro Dice"
        ),
        vessel_fraction=first["micro"]["vessel_fraction"],
        fov="given" if first["fov_images"] == len(ids) else f"{first['fov_images']} of {len(ids)} images",
        metrics={n: _summary_row(pick(n), "macro", calibrated[n]) for n in all_names},
        metrics_micro={n: _summary_row(pick(n), "micro", calibrated[n]) for n in all_names},
        dice_ci=_clean(
            {n: [pick(n)["macro"]["dice"]["ci_low"], pick(n)["macro"]["dice"]["ci_high"]] for n in all_names}
        ),
        metrics_at_0_5={n: _summary_row(aggregates[n]["fixed_0.5"], "macro", calibrated[n]) for n in all_names},
        thresholds=thresholds,
        honesty=checks,
    )
    (out_dir / "aggregate.json").write_text(
        json.dumps(_clean({"aggregates": aggregates, "honesty": [c.model_dump() for c in checks]}), indent=2)
    )
    (out_dir / "curves.json").write_text(json.dumps(curves, indent=2))
    (out_dir / "summary.json").write_text(summary.model_dump_json(indent=2))
    return summary

"""build_report: everything the visualization stage draws, from a dataset, prediction sets and their evaluation.

Writes into ``out_dir`` (which must be new or empty, so that nothing stale rides along in the artifact):
```
report.html                    the report; images embedded as data URIs unless embed_images is off
summary.md                     metrics table, honesty outcome, thin-vessel recall: for KFP's Markdown view
vessel_width.csv               TP/FP/FN, recall and Dice per predictor and vessel-width bucket
plots/{roc,pr,dice,vessel_width,training}.png
panels/<image>__<predictor>.png      best / median / worst test images: full size + thin-vessel zoom
overlays/<predictor>/<image>.png     those images' error overlays alone, full size, colours exact
thumbs/<image>.png                   every test image's error overlay (primary predictor), small
```
The numbers are the evaluation's own per-image rows, not recomputed here; that the maps drawn are the maps scored is
the visualize stage's check (the evaluation's manifest pins the dataset and prediction sets it scored by hash).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

import vesselseg
from vesselseg.config import ConfigModel
from vesselseg.data import PreparedDataset
from vesselseg.errors import DataError
from vesselseg.evaluate.evaluate import ThresholdChoice
from vesselseg.metrics.levels import threshold_of
from vesselseg.predictions import PredictionSet
from vesselseg.visualize import plots
from vesselseg.visualize.colours import BASELINE_COLOUR, predictor_colour
from vesselseg.visualize.content import TABLE_METRICS, Featured, GalleryItem, MetricRow, ReportContent, WidthRow
from vesselseg.visualize.html import render_html
from vesselseg.visualize.inputs import Evaluation, read_evaluation, read_train_log
from vesselseg.visualize.markdown import render_markdown
from vesselseg.visualize.overlay import error_overlay
from vesselseg.visualize.panels import PanelText, Window, prediction_panel, thumbnail
from vesselseg.visualize.vessels import bucket_labels, densest_window, vessel_widths, width_confusion

log = logging.getLogger(__name__)

TRIVIAL = ("all_background", "all_foreground")


class ReportConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    title: str = "Retinal vessel segmentation"
    primary: str | None = Field(
        None, description="predictor whose Dice orders the gallery and picks best/median/worst; default the first set"
    )
    embed_images: bool = Field(True, description="images inside report.html: KFP's HTML viewer shows that one file")
    width_edges_px: list[float] = Field(
        default_factory=lambda: [2.5, 4.5, 6.5], description="upper bounds of the vessel-width buckets, increasing"
    )
    zoom_fraction: float = Field(0.17, gt=0, le=1, description="zoom window side, as a share of the shorter image side")
    panel_max_side: int = Field(
        1200, ge=64, description="larger images are shrunk in the full-size row of a panel (the zoom stays native)"
    )
    thumbnail_px: int = Field(200, ge=32)
    plot_dpi: int = Field(130, ge=50)

    @field_validator("width_edges_px")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if not edges or any(b <= a for a, b in zip(edges, edges[1:])) or edges[0] < 1:
            raise ValueError(f"width edges must be increasing and at least 1 px, got {edges}")
        return edges


class ReportResult(BaseModel):
    html: Path
    markdown: Path
    files: list[str] = Field(description="every file written, relative to the report folder")
    featured: dict[str, str] = Field(description="best / median / worst -> test image id")
    n_images: int
    seconds: float


def build_report(
    dataset: PreparedDataset,
    predictions: list[PredictionSet],
    evaluation_dir: Path,
    out_dir: Path,
    *,
    provenance: dict[str, Any],
    train_log: Path | None = None,
    config: ReportConfig | None = None,
) -> ReportResult:
    started = time.perf_counter()
    config = config or ReportConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"report folder {out_dir} already exists and is not empty; give a new one")
    evaluation = read_evaluation(Path(evaluation_dir))
    names = _predictor_names(predictions, evaluation, config.primary)
    primary = config.primary or names[0]
    training = read_train_log(train_log) if train_log is not None else None
    for folder in ("plots", "panels", "thumbs", *(f"overlays/{_safe(n)}" for n in names)):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)

    scored = {name: evaluation.scored_rows(name) for name in names}
    ids = sorted(scored[primary].index)
    if not ids:
        raise DataError(f"the evaluation in {evaluation_dir} scored no image for {primary!r}")
    levels = {name: evaluation.summary.thresholds[name].level for name in names}
    colours = {name: predictor_colour(i) for i, name in enumerate(names)}
    sets = dict(zip(names, predictions))
    edges = config.width_edges_px
    log.info("report: %d %s images, predictors %s", len(ids), evaluation.summary.split, ", ".join(names))

    widths_total: dict[str, np.ndarray] = {name: np.zeros((len(edges) + 1, 3), np.int64) for name in names}
    gallery = []
    for sample_id in tqdm(ids, desc="report: images", unit="img", mininterval=1):
        truth, fov = dataset.mask(sample_id), dataset.fov(sample_id)
        widths = vessel_widths(truth, fov)
        for name in (n for n in names if sample_id in scored[n].index):
            prob = sets[name].prob(sample_id)
            widths_total[name] += width_confusion(widths, prob, truth, fov, levels[name], edges)
            if name == primary:
                overlay = error_overlay(dataset.image(sample_id), prob, truth, fov, levels[name])
                path = f"thumbs/{_safe(sample_id)}.png"
                thumbnail(overlay, config.thumbnail_px).save(out_dir / path)
                gallery.append(GalleryItem(sample_id, float(scored[name].at[sample_id, "dice"]), path))

    # Full panels only for these few images: the gallery's thumbnails cover the rest at a fraction of the cost.
    roles = _best_median_worst(scored[primary]["dice"])
    featured = [
        _draw_featured(dataset, sets, scored, levels, sample_id, image_roles, config, out_dir)
        for sample_id, image_roles in tqdm(_roles_by_image(roles).items(), desc="report: panels", unit="img")
    ]

    labels = bucket_labels(edges)
    width_rows = [WidthRow(n, colours[n], *(widths_total[n][:, k].tolist() for k in range(3))) for n in names]
    truth_px = widths_total[primary][:, 0] + widths_total[primary][:, 2]
    shares = (truth_px / max(1, truth_px.sum())).tolist()
    _write_width_table(width_rows, labels, out_dir / "vessel_width.csv")
    plot_files = _draw_plots(evaluation, names, colours, (labels, shares, width_rows), training, config, out_dir)

    content = ReportContent(
        title=config.title,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        split=evaluation.summary.split,
        n_images=evaluation.summary.n_images,
        vessel_fraction=evaluation.summary.vessel_fraction,
        fov=evaluation.summary.fov,
        averaging=evaluation.summary.averaging,
        primary=primary,
        metrics=_metric_rows(evaluation, names, colours),
        honesty=evaluation.summary.honesty,
        featured=featured,
        plots=plot_files,
        width_labels=labels,
        width_shares=shares,
        width=width_rows,
        gallery=sorted(gallery, key=lambda item: (item.dice, item.sample_id)),
        provenance=provenance,
        inputs=_inputs_read(dataset, predictions, evaluation, config),
    )
    html_path, md_path = out_dir / "report.html", out_dir / "summary.md"
    html_path.write_text(render_html(content, out_dir, embed=config.embed_images), encoding="utf-8")
    md_path.write_text(render_markdown(content), encoding="utf-8")
    seconds = time.perf_counter() - started
    log.info("report: %s written in %.1f s", html_path, seconds)
    return ReportResult(
        html=html_path,
        markdown=md_path,
        files=sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()),
        featured=roles,
        n_images=len(ids),
        seconds=seconds,
    )


def _safe(name: str) -> str:
    """A file-name-safe form of an image id or predictor name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _predictor_names(predictions: Sequence[PredictionSet], evaluation: Evaluation, primary: str | None) -> list[str]:
    names = [p.info.name for p in predictions]
    if not names or len(set(names)) != len(names):
        raise DataError(f"give one or more prediction sets with distinct names, got {names}")
    unknown = [n for n in names if n not in evaluation.summary.thresholds]
    if unknown:
        raise DataError(f"the evaluation scored {sorted(evaluation.summary.thresholds)}, not {unknown}")
    if primary is not None and primary not in names:
        raise DataError(f"primary predictor {primary!r} is not among the prediction sets {names}")
    return names


def _best_median_worst(dice: pd.Series) -> dict[str, str]:
    """Ties broken by image id, so the same numbers always feature the same images."""
    order = sorted(dice.items(), key=lambda item: (item[1], item[0]))
    return {"best": order[-1][0], "median": order[(len(order) - 1) // 2][0], "worst": order[0][0]}


def _roles_by_image(roles: dict[str, str]) -> dict[str, list[str]]:
    """One entry per image, so that with fewer than three test images none is drawn twice."""
    by_image: dict[str, list[str]] = {}
    for role, sample_id in roles.items():
        by_image.setdefault(sample_id, []).append(role)
    return by_image


def _draw_featured(
    dataset: PreparedDataset,
    sets: dict[str, PredictionSet],
    scored: dict[str, pd.DataFrame],
    levels: dict[str, int],
    sample_id: str,
    roles: list[str],
    config: ReportConfig,
    out_dir: Path,
) -> Featured:
    image, truth, fov = dataset.image(sample_id), dataset.mask(sample_id), dataset.fov(sample_id)
    side = max(16, round(min(truth.shape) * config.zoom_fraction))
    top, left = densest_window(vessel_widths(truth, fov), side, thin_px=config.width_edges_px[0])
    window = Window(top, left, min(side, *truth.shape))
    panels, overlays, dice = {}, {}, {}
    for name, preds in sets.items():
        if sample_id not in scored[name].index:
            continue
        row = scored[name].loc[sample_id]
        prob = preds.prob(sample_id)
        overlay = error_overlay(image, prob, truth, fov, levels[name])
        overlays[name] = f"overlays/{_safe(name)}/{_safe(sample_id)}.png"
        Image.fromarray(overlay).save(out_dir / overlays[name])
        text = PanelText(
            title=f"{sample_id}  ·  {name}",
            detail=f"Dice {row['dice']:.3f}   clDice {row['cldice']:.3f}   threshold {threshold_of(levels[name]):.3f}",
            counts={"tp": int(row["tp"]), "fp": int(row["fp"]), "fn": int(row["fn"])},
        )
        panel = prediction_panel(image, prob, truth, fov, overlay, levels[name], window, text, config.panel_max_side)
        panels[name] = f"panels/{_safe(sample_id)}__{_safe(name)}.png"
        panel.save(out_dir / panels[name])
        dice[name] = float(row["dice"])
    return Featured(roles, sample_id, dice, panels, overlays)


def _curves(evaluation: Evaluation, name: str, colour: str) -> plots.Curves:
    curve = evaluation.curves[name]
    micro = evaluation.chosen(name)["micro"]
    tp, fp, fn, tn = micro["tp"], micro["fp"], micro["fn"], micro["tn"]
    calibrated = bool(evaluation.aggregates[name].get("calibrated", False))
    pooled = evaluation.summary.metrics_micro[name]
    return plots.Curves(
        name=name,
        colour=colour,
        calibrated=calibrated,
        fpr=np.asarray(curve["roc"]["fpr"]),
        tpr=np.asarray(curve["roc"]["tpr"]),
        recall=np.asarray(curve["pr"]["recall"]),
        precision=np.asarray(curve["pr"]["precision"]),
        auc=pooled.get("auc"),
        ap=pooled.get("ap"),
        point=(fp / max(1, fp + tn), tp / max(1, tp + fn), tp / (tp + fp) if tp + fp else math.nan),
    )


def _trivial_points(evaluation: Evaluation) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """ROC points of the trivial guesses, and PR points where precision is defined (something predicted)."""
    roc, pr = {}, {}
    for name in TRIVIAL:
        if name not in evaluation.aggregates:
            continue
        micro = evaluation.chosen(name)["micro"]
        tp, fp, fn, tn = micro["tp"], micro["fp"], micro["fn"], micro["tn"]
        roc[name] = (fp / max(1, fp + tn), tp / max(1, tp + fn))
        if tp + fp:
            pr[name] = (tp / max(1, tp + fn), tp / (tp + fp))
    return roc, pr


def _draw_plots(
    evaluation: Evaluation,
    names: list[str],
    colours: dict[str, str],
    widths: tuple[list[str], list[float], list[WidthRow]],
    training: pd.DataFrame | None,
    config: ReportConfig,
    out_dir: Path,
) -> dict[str, str]:
    files = {key: f"plots/{key}.png" for key in ("roc", "pr", "dice", "vessel_width")}
    dpi = config.plot_dpi
    summary = evaluation.summary
    curves = [_curves(evaluation, name, colours[name]) for name in names]
    roc_points, pr_points = _trivial_points(evaluation)
    plots.roc_plot(curves, roc_points, out_dir / files["roc"], dpi)
    plots.pr_plot(curves, summary.vessel_fraction, pr_points, out_dir / files["pr"], dpi)

    spreads = [
        plots.DiceSpread(
            name=name,
            colour=colours.get(name, BASELINE_COLOUR),
            values=evaluation.scored_rows(name)["dice"].to_numpy(dtype=float),
            mean=_float(summary.metrics[name]["dice"]),
            ci=tuple(summary.dice_ci.get(name, [None, None])),  # type: ignore[arg-type]
        )
        for name in [*names, *(t for t in TRIVIAL if t in summary.metrics)]
    ]
    plots.dice_plot(spreads, out_dir / files["dice"], dpi)

    labels, shares, rows = widths
    series = [plots.WidthSeries(r.name, r.colour, _values(r.recall()), _values(r.dice())) for r in rows]
    plots.width_plot(labels, np.asarray(shares), series, out_dir / files["vessel_width"], dpi)

    if training is not None:
        files["training"] = "plots/training.png"
        plots.training_plot(training, out_dir / files["training"], dpi)
    return files


def _float(value: float | None) -> float:
    """None (a metric the evaluation found undefined) as NaN, which the plots leave out."""
    return math.nan if value is None else float(value)


def _values(values: list[float | None]) -> np.ndarray:
    return np.array([_float(v) for v in values], dtype=float)


def _metric_rows(evaluation: Evaluation, names: list[str], colours: dict[str, str]) -> list[MetricRow]:
    summary = evaluation.summary
    rows = []
    for name in [*names, *(t for t in TRIVIAL if t in summary.metrics)]:
        macro = evaluation.chosen(name)["macro"]
        choice = summary.thresholds.get(name)
        rows.append(
            MetricRow(
                name=name,
                baseline=name in TRIVIAL,
                colour=colours.get(name, BASELINE_COLOUR),
                values={m: summary.metrics[name].get(m) for m in TABLE_METRICS},
                ci={
                    m: (macro[m]["ci_low"], macro[m]["ci_high"])
                    for m in TABLE_METRICS
                    if summary.metrics[name].get(m) is not None
                },
                dice_pooled=summary.metrics_micro[name].get("dice"),
                threshold=choice.threshold if choice else None,
                threshold_source=choice.source if choice else None,
            )
        )
    return rows


def _inputs_read(
    dataset: PreparedDataset, predictions: Sequence[PredictionSet], evaluation: Evaluation, config: ReportConfig
) -> dict[str, Any]:
    counts = dataset.index["split"].value_counts()
    thresholds = evaluation.summary.thresholds
    return {
        "dataset": {
            "fingerprint": dataset.fingerprint,
            "images per split": {split: int(n) for split, n in counts.sort_index().items()},
        },
        "predictions": {
            p.info.name: {
                "threshold used here": _threshold_text(thresholds[p.info.name]),
                "stored masks cut at": f"{p.info.threshold:.4f} ({p.info.threshold_source})",
                "calibrated": p.info.calibrated,
                "dataset files read": len(p.info.read_files),
                "details": p.info.details,
            }
            for p in predictions
        },
        "evaluation": {"split": evaluation.summary.split, "sha256": evaluation.sha256},
        "report": {"vesselseg": vesselseg.__version__, "config": config.model_dump(mode="json")},
    }


def _threshold_text(choice: ThresholdChoice) -> str:
    return f"{choice.threshold:.4f} (level {choice.level}): {choice.source}"


def _write_width_table(rows: Sequence[WidthRow], labels: Sequence[str], path: Path) -> None:
    records = [
        {
            "predictor": row.name,
            "width": label,
            "truth_px": tp + fn,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "recall": recall,
            "dice": dice,
        }
        for row in rows
        for label, tp, fp, fn, recall, dice in zip(labels, row.tp, row.fp, row.fn, row.recall(), row.dice())
    ]
    pd.DataFrame(records).to_csv(path, index=False)

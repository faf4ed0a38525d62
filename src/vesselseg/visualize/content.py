"""What the report says, computed once by ``build`` and rendered by ``html`` and ``markdown``.

Paths are relative to the report folder, so the same content renders embedded or with files beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vesselseg.evaluate import HonestyCheck

TABLE_METRICS = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "auc", "ap", "cldice")
METRIC_NAMES = {
    "dice": "Dice", "iou": "IoU", "precision": "Precision", "recall": "Recall", "specificity": "Specificity",
    "accuracy": "Accuracy", "auc": "AUC", "ap": "AP", "cldice": "clDice",
}  # fmt: skip


def test_label_readers(provenance: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """(stages whose inputs held the test labels, stages whose inputs did not), from the run's manifests as the
    visualize stage walked them (``provenance["test_label_access"]``); None where that walk is not there."""
    rows = provenance.get("test_label_access")
    if not rows:
        return None
    readers = sorted({row["stage"] for row in rows if row.get("read_test_labels")})
    others = sorted({row["stage"] for row in rows if row.get("read_test_labels") is False} - set(readers))
    return readers, others


def percent(share: float) -> str:
    """A share as a whole percentage, without rounding a small non-zero share to '0%'."""
    return "<1%" if 0 < share < 0.005 else f"{share:.0%}"


@dataclass(frozen=True)
class MetricRow:
    name: str
    baseline: bool  # a trivial all-background / all-foreground guess
    colour: str
    values: dict[str, float | None]  # macro means, TABLE_METRICS
    ci: dict[str, tuple[float | None, float | None]]
    dice_pooled: float | None
    threshold: float | None  # None for the trivial baselines
    threshold_source: str | None


@dataclass(frozen=True)
class Featured:
    """One of the best / median / worst test images (by the primary predictor's Dice) and its panels."""

    roles: list[str]
    sample_id: str
    dice: dict[str, float]  # per predictor
    panels: dict[str, str]  # predictor -> panel PNG
    overlays: dict[str, str]  # predictor -> full-size error overlay PNG


@dataclass(frozen=True)
class GalleryItem:
    sample_id: str
    dice: float
    thumbnail: str


@dataclass(frozen=True)
class WidthRow:
    """Pooled over the test images: one predictor's TP/FP/FN per vessel-width bucket."""

    name: str
    colour: str
    tp: list[int]
    fp: list[int]
    fn: list[int]

    def recall(self) -> list[float | None]:
        return [tp / (tp + fn) if tp + fn else None for tp, fn in zip(self.tp, self.fn)]

    def dice(self) -> list[float | None]:
        return [2 * tp / d if (d := 2 * tp + fp + fn) else None for tp, fp, fn in zip(self.tp, self.fp, self.fn)]


@dataclass(frozen=True)
class ReportContent:
    title: str
    generated_at: str
    split: str
    n_images: int
    vessel_fraction: float
    fov: str
    averaging: str
    primary: str
    metrics: list[MetricRow]
    honesty: list[HonestyCheck]
    featured: list[Featured]
    plots: dict[str, str]  # roc, pr, dice, width, training -> PNG
    width_labels: list[str]
    width_shares: list[float]  # share of the truth's vessel pixels in each bucket
    width: list[WidthRow]
    gallery: list[GalleryItem]
    provenance: dict[str, Any]  # as the pipeline passed it
    inputs: dict[str, Any]  # what the report itself read: hashes, thresholds, files

    @property
    def predictors(self) -> list[MetricRow]:
        return [row for row in self.metrics if not row.baseline]

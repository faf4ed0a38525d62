"""Threshold-free scores from the 8-bit histograms: exact AUC-ROC, average precision and curves.

Both follow scikit-learn's definitions, with all pixels sharing a stored value treated as one tie:
AUC is the trapezoid area under the ROC curve through the distinct values (the Mann-Whitney statistic
with ties counted one half), AP is ``sum_n (R_n - R_(n-1)) * P_n`` over the distinct values in decreasing
order, without interpolation. AUC is NaN when the truth lacks either class; AP is NaN when it has no
vessel pixel (with no background pixel AP is 1, as in scikit-learn). A constant map has AUC 0.5 and AP
equal to the vessel fraction.
"""

from dataclasses import dataclass

import numpy as np

from vesselseg.errors import DataError
from vesselseg.metrics.counts import ImageCounts, confusion_at_all_levels
from vesselseg.metrics.levels import N_LEVELS, NO_POSITIVE_LEVEL


def auc_roc(counts: ImageCounts) -> float:
    """Area under the ROC curve; NaN when the truth has no vessel or no background pixel."""
    n_pos, n_neg = counts.positives, counts.negatives
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    pos = [int(x) for x in counts.pos_hist]
    neg = [int(x) for x in counts.neg_hist]
    # Python integers keep the doubled Mann-Whitney sum exact for any number of pixels; the single
    # division at the end is the only rounding.
    twice_wins = 0
    pos_above = 0
    for v in range(N_LEVELS - 1, -1, -1):
        twice_wins += neg[v] * (2 * pos_above + pos[v])
        pos_above += pos[v]
    return twice_wins / (2 * n_pos * n_neg)


def average_precision(counts: ImageCounts) -> float:
    """Step-wise average precision as scikit-learn computes it; NaN when the truth has no vessel."""
    n_pos = counts.positives
    if n_pos == 0:
        return float("nan")
    tp, fp, _, _ = confusion_at_all_levels(counts)
    # Recall only rises at values holding vessel pixels, by pos_hist[v] / n_pos, and the precision of
    # that step is the one at threshold v (all pixels with prob >= v predicted positive).
    steps = counts.pos_hist > 0
    precision = tp[:N_LEVELS][steps] / (tp[:N_LEVELS][steps] + fp[:N_LEVELS][steps])
    return float(np.dot(counts.pos_hist[steps], precision) / n_pos)


@dataclass(frozen=True, eq=False)
class RocCurve:
    """ROC points from the strictest decision to the loosest, one per distinct stored value.

    The first point (0, 0) has level 256 (nothing predicted positive); ``thresholds`` are
    ``levels / 255``, so that point's threshold is 256/255, finite unlike scikit-learn's ``inf``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    levels: np.ndarray

    @property
    def thresholds(self) -> np.ndarray:
        return self.levels / 255.0


@dataclass(frozen=True, eq=False)
class PrCurve:
    """Precision-recall points from the strictest decision (recall 0, precision 1) to the loosest."""

    precision: np.ndarray
    recall: np.ndarray
    levels: np.ndarray

    @property
    def thresholds(self) -> np.ndarray:
        return self.levels / 255.0


def _distinct_levels(counts: ImageCounts) -> np.ndarray:
    present = (counts.pos_hist + counts.neg_hist) > 0
    return np.concatenate([[NO_POSITIVE_LEVEL], np.flatnonzero(present)[::-1]])


def roc_curve_points(counts: ImageCounts) -> RocCurve:
    """At most 257 ROC points; raises ``DataError`` when the truth lacks either class."""
    if counts.positives == 0 or counts.negatives == 0:
        raise DataError("an ROC curve needs both vessel and background pixels in the truth")
    tp, fp, _, _ = confusion_at_all_levels(counts)
    levels = _distinct_levels(counts)
    return RocCurve(fpr=fp[levels] / counts.negatives, tpr=tp[levels] / counts.positives, levels=levels)


def pr_curve_points(counts: ImageCounts) -> PrCurve:
    """At most 257 precision-recall points; raises ``DataError`` when the truth has no vessel pixel."""
    if counts.positives == 0:
        raise DataError("a precision-recall curve needs vessel pixels in the truth")
    tp, fp, _, _ = confusion_at_all_levels(counts)
    levels = _distinct_levels(counts)
    predicted = tp[levels] + fp[levels]
    precision = np.divide(tp[levels], predicted, out=np.ones(levels.size), where=predicted > 0)
    return PrCurve(precision=precision, recall=tp[levels] / counts.positives, levels=levels)

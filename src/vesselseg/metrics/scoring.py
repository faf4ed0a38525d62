"""Confusion-count scores with one convention for empty masks.

Convention (applied by every function in ``vesselseg.metrics``): a ratio whose denominator is zero is
1 when the prediction makes no mistake that the ratio could see, and 0 otherwise. Concretely:

- truth empty and prediction empty: dice = iou = precision = recall = 1;
- truth empty, prediction non-empty: dice = iou = 0, recall = 0 (precision is then 0 as well, tp = 0);
- prediction empty, truth non-empty: precision = 0 (and dice = iou = recall = 0);
- specificity with no truth-negative pixels: 1 if no pixel is predicted negative, else 0;
- accuracy of zero pixels: 1; balanced accuracy is always ``(recall + specificity) / 2``, so it departs
  from scikit-learn's (which averages only the classes present in the truth) when a class is absent;
- MCC: 0 when its denominator is zero (any row or column of the confusion matrix empty), as
  scikit-learn does, even when truth and prediction are both empty.

Dice equals F1 and recall equals sensitivity.
"""

import numpy as np
from numpy.typing import ArrayLike

SCORE_NAMES = (
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "accuracy",
    "balanced_accuracy",
    "mcc",
)


def _ratio(num: np.ndarray, den: np.ndarray, fallback: np.ndarray | float) -> np.ndarray:
    safe = np.where(den > 0, den, 1.0)
    return np.where(den > 0, num / safe, fallback)


def score_arrays(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, tn: ArrayLike) -> dict[str, np.ndarray]:
    """Every score in ``SCORE_NAMES`` for confusion counts of any (broadcastable) shape."""
    tp, fp, fn, tn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn, tn))
    recall = _ratio(tp, tp + fn, np.where(fp == 0, 1.0, 0.0))
    specificity = _ratio(tn, tn + fp, np.where(fn == 0, 1.0, 0.0))
    mcc_den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "dice": _ratio(2.0 * tp, 2.0 * tp + fp + fn, 1.0),
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, np.where(fn == 0, 1.0, 0.0)),
        "recall": recall,
        "specificity": specificity,
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn, 1.0),
        "balanced_accuracy": (recall + specificity) / 2.0,
        "mcc": _ratio(tp * tn - fp * fn, mcc_den, 0.0),
    }


def scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Every score in ``SCORE_NAMES`` for one confusion matrix, as plain floats."""
    return {name: float(value) for name, value in score_arrays(tp, fp, fn, tn).items()}

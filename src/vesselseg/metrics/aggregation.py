"""Dataset-level numbers: micro (pooled pixels) and macro (mean over images) with bootstrap CIs."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from vesselseg.errors import DataError
from vesselseg.metrics.counts import ImageCounts, confusion, confusion_at_all_levels, pool
from vesselseg.metrics.image import ImageResult
from vesselseg.metrics.levels import N_LEVELS, threshold_of
from vesselseg.metrics.ranking import auc_roc, average_precision
from vesselseg.metrics.scoring import SCORE_NAMES, score_arrays, scores
from vesselseg.metrics.topological import CenterlineCounts

MACRO_NAMES = (*SCORE_NAMES, "auc", "ap", "cldice", "betti0_error", "betti1_error", "vessel_fraction")


def ciou(results: Sequence[ImageResult]) -> float:
    """Cumulative IoU of referring segmentation: total intersection over total union (1 if no union)."""
    if not results:
        raise DataError("cIoU of an empty set of images is undefined")
    intersection = sum(r.tp for r in results)
    union = sum(r.tp + r.fp + r.fn for r in results)
    return intersection / union if union else 1.0


def giou(results: Sequence[ImageResult]) -> float:
    """Generalised IoU of referring segmentation: mean per-image IoU, an empty union counting 1."""
    if not results:
        raise DataError("gIoU of an empty set of images is undefined")
    return float(np.mean([r.tp / u if (u := r.tp + r.fp + r.fn) else 1.0 for r in results]))


def best_threshold(counts: Sequence[ImageCounts]) -> tuple[int, float]:
    """Level in 0..255 maximising the pooled Dice, and that Dice; ties go to the lowest level.

    Call it on validation-split predictions only and apply the level to the test split: choosing the
    threshold on test images would report an optimistic score.
    """
    tp, fp, fn, tn = confusion_at_all_levels(pool(counts))
    dice = score_arrays(tp[:N_LEVELS], fp[:N_LEVELS], fn[:N_LEVELS], tn[:N_LEVELS])["dice"]
    best = int(np.argmax(dice))
    return best, float(dice[best])


def _macro_row(result: ImageResult) -> list[float]:
    values = {
        **result.scores,
        "auc": result.auc,
        "ap": result.ap,
        "cldice": result.cldice,
        "betti0_error": result.betti0_error,
        "betti1_error": result.betti1_error,
        "vessel_fraction": result.vessel_fraction,
    }
    return [values[name] for name in MACRO_NAMES]


def _bootstrap_weights(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each image is drawn in each of ``n_boot`` resamples of the images, shape (n_boot, n)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n_boot, n_images))
    flat = draws + n_images * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_images).reshape(n_boot, n_images)


def _macro(values: np.ndarray, n_boot: int, seed: int, confidence: float) -> dict[str, dict[str, float | int]]:
    """Mean over images of each column with a percentile-bootstrap CI; NaN entries are skipped."""
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0)
    weights = _bootstrap_weights(values.shape[0], n_boot, seed).astype(np.float64)
    # Every resample's mean of every metric from two matrix products instead of a Python loop.
    sums = weights @ filled
    used = weights @ finite
    boot = np.divide(sums, used, out=np.full(sums.shape, np.nan), where=used > 0)
    tail = (1.0 - confidence) / 2.0
    out = {}
    for j, name in enumerate(MACRO_NAMES):
        column = boot[:, j][np.isfinite(boot[:, j])]
        n = int(finite[:, j].sum())
        low, high = np.quantile(column, [tail, 1.0 - tail]) if column.size else (np.nan, np.nan)
        out[name] = {
            "mean": float(filled[:, j].sum() / n) if n else float("nan"),
            "ci_low": float(low),
            "ci_high": float(high),
            "n": n,
        }
    return out


def aggregate(
    results: Sequence[ImageResult], n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any]:
    """Micro and macro aggregates of images scored at one level, plus cIoU and gIoU.

    ``micro``: scores of the summed confusion counts, AUC/AP of the summed histograms, clDice of the
    summed skeleton counts, pooled vessel fraction. ``macro``: per metric the mean over images (images
    where it is NaN, e.g. AUC of an image without vessels, are left out and ``n`` says how many
    counted) with a percentile-bootstrap CI from resampling images with replacement. cIoU equals the
    micro IoU and gIoU the macro IoU; both are reported under their referring-segmentation names.
    """
    if not results:
        raise DataError("cannot aggregate an empty list of image results")
    levels = {r.level for r in results}
    if len(levels) != 1:
        raise DataError(f"image results were scored at different levels {sorted(levels)}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    level = levels.pop()
    pooled = pool(r.counts for r in results)
    tp, fp, fn, tn = confusion(pooled, level)
    centerline = sum((r.topology.centerline for r in results), CenterlineCounts(0, 0, 0, 0))
    micro = {
        **scores(tp, fp, fn, tn),
        "auc": auc_roc(pooled),
        "ap": average_precision(pooled),
        "cldice": centerline.cldice,
        "vessel_fraction": pooled.vessel_fraction,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
    values = np.array([_macro_row(r) for r in results], dtype=np.float64)
    return {
        "n_images": len(results),
        "fov_images": sum(r.fov_used for r in results),
        "level": level,
        "threshold": threshold_of(level),
        "micro": micro,
        "macro": _macro(values, n_boot, seed, confidence),
        "ciou": ciou(results),
        "giou": giou(results),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "confidence": confidence, "method": "percentile"},
    }

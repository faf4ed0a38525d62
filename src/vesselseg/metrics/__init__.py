"""Vessel segmentation metrics computed from 8-bit probability maps inside the field of view.

Inputs per image: ``prob`` (a ``ProbabilityMap``: 8-bit levels v, p = v / 255), ``truth`` (bool) and
``fov`` (bool, or None to score the whole image, recorded as ``fov_used=False``). Pixels outside the FOV
are ignored everywhere. Decisions: ``v >= level(t)`` with ``level(t) = floor(255 t + 0.5)`` (``levels``).
Empty masks: both empty scores 1, exactly one empty scores 0 (``scoring`` gives every case). Topology uses
an 8-connected foreground and a 4-connected background (``topological``).
"""

from vesselseg.metrics.aggregation import MACRO_NAMES, aggregate, best_threshold, ciou, giou
from vesselseg.metrics.counts import (
    ImageCounts,
    confusion,
    confusion_at_all_levels,
    constant_prediction,
    constant_prediction_counts,
    image_counts,
    pool,
)
from vesselseg.metrics.image import ImageResult, evaluate_image
from vesselseg.metrics.levels import ProbabilityMap, level, threshold_of
from vesselseg.metrics.ranking import (
    PrCurve,
    RocCurve,
    auc_roc,
    average_precision,
    pr_curve_points,
    roc_curve_points,
)
from vesselseg.metrics.scoring import SCORE_NAMES, score_arrays, scores
from vesselseg.metrics.topological import (
    Betti,
    CenterlineCounts,
    Topology,
    betti_numbers,
    centerline_counts,
    cldice,
    topology,
)

__all__ = [
    "MACRO_NAMES",
    "SCORE_NAMES",
    "Betti",
    "CenterlineCounts",
    "ImageCounts",
    "ImageResult",
    "PrCurve",
    "ProbabilityMap",
    "RocCurve",
    "Topology",
    "aggregate",
    "auc_roc",
    "average_precision",
    "best_threshold",
    "betti_numbers",
    "centerline_counts",
    "ciou",
    "cldice",
    "confusion",
    "confusion_at_all_levels",
    "constant_prediction",
    "constant_prediction_counts",
    "evaluate_image",
    "giou",
    "image_counts",
    "level",
    "pool",
    "pr_curve_points",
    "roc_curve_points",
    "score_arrays",
    "scores",
    "threshold_of",
    "topology",
]

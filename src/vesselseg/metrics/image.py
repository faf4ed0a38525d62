"""Every metric of one probability map against its truth, at one decision level."""

from dataclasses import dataclass

import numpy as np

from vesselseg.metrics.counts import ImageCounts, confusion, image_counts
from vesselseg.metrics.levels import ProbabilityMap, resolve_level, threshold_of
from vesselseg.metrics.ranking import auc_roc, average_precision
from vesselseg.metrics.scoring import scores
from vesselseg.metrics.topological import Topology, topology


@dataclass(frozen=True, eq=False)
class ImageResult:
    """Counts and scores of one image inside its FOV (the whole image when ``fov_used`` is False).

    ``scores`` holds the confusion-based scores at ``level``; ``auc`` and ``ap`` are threshold-free
    (NaN when undefined, see ``vesselseg.metrics.ranking``); topology is of the binary prediction at
    ``level`` against the truth, both restricted to the FOV.
    """

    counts: ImageCounts
    level: int
    tp: int
    fp: int
    fn: int
    tn: int
    scores: dict[str, float]
    auc: float
    ap: float
    topology: Topology

    @property
    def threshold(self) -> float:
        return threshold_of(self.level)

    @property
    def fov_used(self) -> bool:
        return self.counts.fov_used

    @property
    def vessel_fraction(self) -> float:
        return self.counts.vessel_fraction

    @property
    def cldice(self) -> float:
        return self.topology.centerline.cldice

    @property
    def betti0_error(self) -> int:
        return self.topology.betti0_error

    @property
    def betti1_error(self) -> int:
        return self.topology.betti1_error

    def row(self) -> dict[str, float | int | bool]:
        """Flat scalars for a per-image table."""
        betti_pred, betti_truth = self.topology.betti_pred, self.topology.betti_truth
        return {
            "level": self.level,
            "threshold": self.threshold,
            "fov_used": self.fov_used,
            "n_pixels": self.counts.n_pixels,
            "vessel_fraction": self.vessel_fraction,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
            **self.scores,
            "auc": self.auc,
            "ap": self.ap,
            "cldice": self.cldice,
            "betti0_pred": betti_pred.b0,
            "betti0_truth": betti_truth.b0,
            "betti1_pred": betti_pred.b1,
            "betti1_truth": betti_truth.b1,
            "betti0_error": self.betti0_error,
            "betti1_error": self.betti1_error,
        }


def evaluate_image(
    prob: ProbabilityMap,
    truth: np.ndarray,
    fov: np.ndarray | None = None,
    *,
    threshold: float | None = None,
    level: int | None = None,
    parallel: bool = True,
) -> ImageResult:
    """Score a probability map against a bool truth inside a bool FOV (None: whole image).

    Give the decision as a ``threshold`` in [0, 1] or an 8-bit ``level`` (not both; neither means
    threshold 0.5, level 128); see ``vesselseg.metrics.levels`` for the rule. Raises ``DataError`` on
    a dtype or shape mismatch or an empty FOV. ``parallel`` lets the topology use a second thread.
    """
    decision_level = resolve_level(threshold, level)
    counts = image_counts(prob, truth, fov)
    pred = prob.mask_at(decision_level)
    if fov is not None:
        pred &= fov
        truth = truth & fov
    tp, fp, fn, tn = confusion(counts, decision_level)
    return ImageResult(
        counts=counts,
        level=decision_level,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        scores=scores(tp, fp, fn, tn),
        auc=auc_roc(counts),
        ap=average_precision(counts),
        topology=topology(pred, truth, parallel=parallel),
    )

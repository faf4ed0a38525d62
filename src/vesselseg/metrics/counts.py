"""Per-image 8-bit histograms inside the FOV, from which every threshold-based number is derived.

For each image we keep two 256-bin histograms over the pixels inside the field of view: ``pos_hist[v]``
counts truth-positive (vessel) pixels whose stored probability is ``v``, ``neg_hist[v]`` truth-negative
ones. Confusion counts at any level are suffix sums of these, AUC and AP are exact sums over them, and
pooling images (micro averaging) is adding them.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from vesselseg.errors import DataError
from vesselseg.metrics.levels import N_LEVELS, ProbabilityMap, check_level


@dataclass(frozen=True, eq=False)
class ImageCounts:
    """Truth-positive and truth-negative 8-bit histograms inside the FOV of one image (or a pool).

    ``fov_used`` is False when the whole image was scored because the dataset has no FOV mask; for a
    pool it is True only if every pooled image used one.
    """

    pos_hist: np.ndarray
    neg_hist: np.ndarray
    fov_used: bool

    def __post_init__(self) -> None:
        for name in ("pos_hist", "neg_hist"):
            hist = getattr(self, name)
            if hist.shape != (N_LEVELS,) or hist.dtype != np.int64 or (hist < 0).any():
                raise ValueError(f"{name} must be {N_LEVELS} non-negative int64 counts")
            # Frozen in spirit too: results built from these must not change under the caller.
            hist.setflags(write=False)

    @property
    def positives(self) -> int:
        return int(self.pos_hist.sum())

    @property
    def negatives(self) -> int:
        return int(self.neg_hist.sum())

    @property
    def n_pixels(self) -> int:
        return self.positives + self.negatives

    @property
    def vessel_fraction(self) -> float:
        """Share of scored pixels that are vessel: the accuracy an all-foreground guess would get."""
        return self.positives / self.n_pixels if self.n_pixels else float("nan")


def validate_inputs(prob: ProbabilityMap, truth: np.ndarray, fov: np.ndarray | None) -> None:
    """Raise ``DataError`` unless truth/fov are bool masks of the map's shape (and the FOV is not empty)."""
    masks = {"truth": truth} if fov is None else {"truth": truth, "fov": fov}
    for name, mask in masks.items():
        if mask.dtype != np.bool_:
            raise DataError(f"{name} mask of {prob.sample_id!r} must be bool, got {mask.dtype}")
        if mask.shape != prob.shape:
            # Resizing here would hide a broken inference stage, so a mismatch is an error.
            raise DataError(
                f"{name} mask shape {mask.shape} of {prob.sample_id!r} differs from prediction {prob.shape}"
            )
    if fov is not None and not fov.any():
        raise DataError(f"FOV mask of {prob.sample_id!r} is empty: no pixel would be scored")


def image_counts(prob: ProbabilityMap, truth: np.ndarray, fov: np.ndarray | None = None) -> ImageCounts:
    """Histograms of one image; ``fov=None`` scores the whole image and records ``fov_used=False``."""
    validate_inputs(prob, truth, fov)
    # One bincount over a 10-bit code (value, truth bit, FOV bit) avoids gathering the FOV pixels.
    code = prob.levels.astype(np.uint16)
    code |= truth.view(np.uint8).astype(np.uint16) << 8
    if fov is not None:
        code |= fov.view(np.uint8).astype(np.uint16) << 9
        hist = np.bincount(code.ravel(), minlength=4 * N_LEVELS)[2 * N_LEVELS :]
    else:
        hist = np.bincount(code.ravel(), minlength=2 * N_LEVELS)
    hist = hist.astype(np.int64, copy=False)
    return ImageCounts(
        pos_hist=hist[N_LEVELS : 2 * N_LEVELS].copy(),
        neg_hist=hist[:N_LEVELS].copy(),
        fov_used=fov is not None,
    )


def constant_prediction(truth: np.ndarray, value: int, sample_id: str) -> ProbabilityMap:
    """A probability map of ``truth``'s shape holding level ``value`` everywhere.

    ``value=0`` is the all-background guess and ``value=255`` the all-foreground guess; feeding them to
    ``evaluate_image`` scores the trivial baselines on the same pixels with the same code as a model.
    Their AUC is 0.5 and their AP equals the vessel fraction (all pixels tie).
    """
    if not 0 <= value < N_LEVELS:
        raise ValueError(f"constant prediction value must lie in 0..255, got {value}")
    return ProbabilityMap(np.full(truth.shape, value, dtype=np.uint8), sample_id)


def constant_prediction_counts(truth: np.ndarray, fov: np.ndarray | None, value: int) -> ImageCounts:
    """Histograms of a constant prediction of level ``value``, for when only counts are needed."""
    return image_counts(constant_prediction(truth, value, f"constant level {value}"), truth, fov)


def pool(counts: Iterable[ImageCounts]) -> ImageCounts:
    """Sum of histograms: the pooled pixels of several images (micro averaging)."""
    items = list(counts)
    if not items:
        raise DataError("cannot pool an empty list of images")
    return ImageCounts(
        pos_hist=np.sum([c.pos_hist for c in items], axis=0, dtype=np.int64),
        neg_hist=np.sum([c.neg_hist for c in items], axis=0, dtype=np.int64),
        fov_used=all(c.fov_used for c in items),
    )


def confusion(counts: ImageCounts, level: int) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` when pixels with ``prob >= level`` are predicted vessel (level 0..256)."""
    lvl = check_level(level)
    tp = int(counts.pos_hist[lvl:].sum())
    fp = int(counts.neg_hist[lvl:].sum())
    return tp, fp, counts.positives - tp, counts.negatives - fp


def confusion_at_all_levels(counts: ImageCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, fn, tn)`` arrays indexed by level 0..256 (257 entries each)."""
    zero = np.zeros(1, dtype=np.int64)
    tp = np.concatenate([np.cumsum(counts.pos_hist[::-1])[::-1], zero])
    fp = np.concatenate([np.cumsum(counts.neg_hist[::-1])[::-1], zero])
    return tp, fp, tp[0] - tp, fp[0] - fp

"""Vessel geometry of a ground-truth mask: centreline, local width, and where the thin vessels are.

The centreline is the skeleton of the truth inside the FOV. At a centreline pixel the Euclidean
distance r to the nearest background pixel gives the vessel's width, about 2r - 1 pixels (1 for a
one-pixel line, 3 for a three-pixel one). Every pixel of the image takes the width of its nearest
centreline pixel: a truth pixel then belongs to its own vessel, and a false positive is charged to the
vessel it lies beside, which is what a per-width Dice needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from vesselseg.metrics.levels import ProbabilityMap


@dataclass(frozen=True)
class VesselWidths:
    skeleton: np.ndarray  # bool (H, W)
    width: np.ndarray  # float32 (H, W): width in px of the nearest centreline pixel; NaN without vessels


def vessel_widths(truth: np.ndarray, fov: np.ndarray | None) -> VesselWidths:
    inside = truth if fov is None else truth & fov
    skeleton = skeletonize(inside)
    if not skeleton.any():
        return VesselWidths(skeleton, np.full(truth.shape, np.nan, np.float32))
    centre_width = 2.0 * ndimage.distance_transform_edt(inside) - 1.0
    _, (rows, cols) = ndimage.distance_transform_edt(~skeleton, return_indices=True)
    return VesselWidths(skeleton, centre_width[rows, cols].astype(np.float32))


def bucket_labels(edges: Sequence[float]) -> list[str]:
    """Names of the width buckets that ``edges`` (upper bounds in px, increasing) cut: '1–2 px', …, '≥7 px'."""
    lows = [1] + [math.floor(edge) + 1 for edge in edges]
    highs = [math.floor(edge) for edge in edges]
    labels = [f"{low} px" if low == high else f"{low}–{high} px" for low, high in zip(lows, highs)]
    return labels + [f"≥{lows[-1]} px"]


def width_confusion(
    widths: VesselWidths,
    prob: ProbabilityMap,
    truth: np.ndarray,
    fov: np.ndarray | None,
    level: int,
    edges: Sequence[float],
) -> np.ndarray:
    """int64 (len(edges) + 1, 3): TP, FP, FN inside the FOV per width bucket.

    An image without vessels has no centreline to charge false positives to; its row sums are zero.
    """
    n_buckets = len(edges) + 1
    if np.isnan(widths.width).all():
        return np.zeros((n_buckets, 3), np.int64)
    inside = np.ones(prob.shape, bool) if fov is None else fov
    pred = prob.mask_at(level)
    # One code per pixel, bucket * 4 + class (0 TN or outside the FOV, 1 TP, 2 FP, 3 FN), and one bincount.
    klass = np.zeros(prob.shape, np.int64)
    klass[pred & truth & inside] = 1
    klass[pred & ~truth & inside] = 2
    klass[~pred & truth & inside] = 3
    bucket = np.searchsorted(np.asarray(edges, np.float32), widths.width, side="left")
    counts = np.bincount((bucket * 4 + klass).ravel(), minlength=4 * n_buckets).reshape(n_buckets, 4)
    return counts[:, 1:].astype(np.int64)


def densest_window(widths: VesselWidths, side: int, thin_px: float) -> tuple[int, int]:
    """(top, left) of the ``side`` x ``side`` window holding the most centreline of vessels ≤ ``thin_px`` wide.

    Falls back to all vessels when there is no thin one, and to the image centre when there is none.
    """
    height, width = widths.skeleton.shape
    side = min(side, height, width)
    weight = widths.skeleton & (widths.width <= thin_px)
    if not weight.any():
        weight = widths.skeleton
    if not weight.any():
        return (height - side) // 2, (width - side) // 2
    table = np.pad(weight.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)

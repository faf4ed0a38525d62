"""Pixel renderings of one prediction: the error overlay, binary masks and the probability heat map.

All take what the metrics take (a ``ProbabilityMap``, bool truth, bool FOV or None for the whole
image) and follow the metrics' rules: a pixel is predicted vessel iff it is in ``prob.mask_at(level)``
and only pixels inside the FOV are scored, so only those are coloured.
"""

from __future__ import annotations

import numpy as np

from vesselseg.metrics.counts import validate_inputs
from vesselseg.metrics.levels import ProbabilityMap
from vesselseg.visualize.colours import FN, FP, TP, heat_lut

_HEAT = heat_lut()
_OUTSIDE_FOV = 40  # grey level of unscored pixels in mask renderings


def error_overlay(
    image: np.ndarray, prob: ProbabilityMap, truth: np.ndarray, fov: np.ndarray | None, level: int
) -> np.ndarray:
    """uint8 (H, W, 3): TP, FP and FN inside the FOV in their colours over a dimmed grey photograph.

    Every other pixel is grey (R = G = B) and none of the three colours is, so the number of pixels of
    each colour inside the FOV equals that class's count in ``vesselseg.metrics.confusion`` at ``level``.
    """
    validate_inputs(prob, truth, fov)
    if image.shape != (*prob.shape, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 {(*prob.shape, 3)}, got {image.dtype} {image.shape}")
    inside = np.ones(prob.shape, bool) if fov is None else fov
    # Dimmed so that the near-white TP colour stands out, but bright enough to keep the anatomy.
    luminance = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = np.where(inside, 24 + 0.4 * luminance, 0.15 * luminance).astype(np.uint8)
    out = np.repeat(grey[..., None], 3, axis=2)
    pred = prob.mask_at(level)
    truth_in = truth & inside
    out[pred & truth_in] = TP
    out[pred & inside & ~truth] = FP
    out[~pred & truth_in] = FN
    return out


def mask_image(mask: np.ndarray, fov: np.ndarray | None) -> np.ndarray:
    """uint8 (H, W, 3): the mask white on black inside the FOV; outside it dark grey, as it is not scored."""
    inside = np.ones(mask.shape, bool) if fov is None else fov
    grey = np.where(inside, np.where(mask, 255, 0), _OUTSIDE_FOV).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def heat_map(prob: ProbabilityMap) -> np.ndarray:
    """uint8 (H, W, 3): the stored probability through the report's heat-map colours."""
    return _HEAT[prob.levels]

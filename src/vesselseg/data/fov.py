"""Field-of-view masks for datasets that ship none (CHASE_DB1, STARE)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from vesselseg.errors import DataError


def derive_fov(image: np.ndarray, name: str) -> np.ndarray:
    """The camera's circular field of view of a fundus photograph, as a bool (H, W) mask.

    Outside the FOV a fundus camera records (near) black, while the retina is bright in the red channel
    even on vessels, so:
    1. the red channel, smoothed against JPEG noise (Gaussian, sigma 0.2 % of the shorter side, at least
       0.5 px), is thresholded at 15 % of its 99th percentile (and at least 12 of 255);
    2. a morphological opening with a disk of 1 % of the shorter side removes the text labels and dust
       that some cameras burn in outside the FOV;
    3. the largest connected component is kept and its holes are filled.
    ``name`` (the image's file) goes into the error raised when no bright region is found.
    """
    red = ndimage.gaussian_filter(image[..., 0].astype(np.float32), max(0.5, 0.002 * min(image.shape[:2])))
    level = max(12.0, 0.15 * float(np.percentile(red, 99)))
    bright = red > level
    radius = max(1.0, 0.01 * min(bright.shape))
    # Opening with a disk through distance transforms: exact disks at any radius, and O(pixels).
    eroded = ndimage.distance_transform_edt(bright) > radius
    if not eroded.any():
        raise DataError(f"cannot derive a field of view for {name}: no region brighter than {level:.0f} in red")
    opened = ndimage.distance_transform_edt(~eroded) <= radius
    labels, _ = ndimage.label(opened)
    sizes = np.bincount(labels.ravel())[1:]
    fov = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if fov.mean() < 0.05:
        raise DataError(
            f"cannot derive a field of view for {name}: the bright region covers only {fov.mean():.1%} of the image"
        )
    return fov

"""Frangi vesselness on the green channel, as an 8-bit probability-like map.

Vesselness is a ranking score, not a calibrated probability: each image's response is scaled by a
high percentile inside its FOV so that one threshold (chosen on validation images) transfers across
images of different contrast.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import ConfigDict, Field
from scipy import ndimage
from skimage.filters import frangi

from vesselseg.config import ConfigModel


class FrangiConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    sigmas: list[Annotated[float, Field(gt=0, le=64)]] = Field(
        default_factory=lambda: [1.0, 1.5, 2.0, 3.0, 4.0], min_length=1, description="scales in px"
    )
    # beta or gamma at 0 divides by zero inside skimage: NaN everywhere, an all-zero map.
    beta: float = Field(0.5, gt=0, description="sensitivity to blob-like structures")
    gamma: float | None = Field(None, gt=0, description="sensitivity to background noise; None: skimage's default")
    scale_percentile: float = Field(99.0, gt=50, le=100, description="in-FOV response mapped to 1.0")
    fov_erosion_px: int = Field(3, ge=0, description="drop the FOV rim, whose edge looks like a vessel")


def frangi_probability(image: np.ndarray, fov: np.ndarray, config: FrangiConfig | None = None) -> np.ndarray:
    """float (H, W) vesselness of an RGB uint8 image, 1 at the in-FOV percentile (a map clips above); zero outside
    the (eroded) FOV."""
    config = config or FrangiConfig()
    green = image[..., 1].astype(np.float64) / 255.0
    inside = fov.astype(bool)
    if config.fov_erosion_px:
        inside = ndimage.binary_erosion(inside, iterations=config.fov_erosion_px)
    if not inside.any():
        return np.zeros(fov.shape)
    # Fill outside the FOV with the inside median so the black border creates no ridge response.
    filled = np.where(inside, green, np.median(green[inside]))
    response = frangi(filled, sigmas=config.sigmas, beta=config.beta, gamma=config.gamma, black_ridges=True)
    response[~inside] = 0.0
    scale = np.percentile(response[inside], config.scale_percentile)
    if scale <= 0:
        return np.zeros(fov.shape)
    return response / scale

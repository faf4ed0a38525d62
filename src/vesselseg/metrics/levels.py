"""8-bit probability maps and the one rule that turns a threshold into a decision level.

A ``ProbabilityMap`` holds a map as its 8-bit levels: ``uint8`` values ``v`` meaning ``p = v / 255``
(``ProbabilityMap.from_probability`` encodes ``round(255 p)``). A pixel is predicted positive at
threshold ``t`` iff ``v >= level(t)`` (``ProbabilityMap.mask_at``) with ``level(t) = floor(255 * t + 0.5)``
(round half up), so ``level(0.5) == 128``: for 8-bit maps this is the same decision as ``p > 0.5``
because no 8-bit value equals 0.5. Level 0 marks every pixel positive; ``NO_POSITIVE_LEVEL`` (256, not
reachable from a threshold) marks none, which curves use as their starting point.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from vesselseg.errors import DataError

N_LEVELS = 256
NO_POSITIVE_LEVEL = N_LEVELS


def level(threshold: float) -> int:
    """Decision level for a probability threshold in [0, 1]: ``floor(255 * threshold + 0.5)``."""
    if not 0.0 <= threshold <= 1.0:  # also rejects NaN
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    return math.floor(255.0 * threshold + 0.5)


def threshold_of(decision_level: int) -> float:
    """Probability that a decision level stands for (``level / 255``), for reports."""
    return check_level(decision_level) / 255.0


def check_level(decision_level: int) -> int:
    """Return the level as an ``int`` if it is an integer in 0..256, raise ``ValueError`` otherwise."""
    # operator.index accepts numpy integers but refuses floats, which would silently mean a threshold.
    if isinstance(decision_level, bool):
        raise ValueError(f"level must be an integer, got {decision_level!r}")
    try:
        value = operator.index(decision_level)
    except TypeError:
        raise ValueError(f"level must be an integer, got {decision_level!r}") from None
    if not 0 <= value <= NO_POSITIVE_LEVEL:
        raise ValueError(f"level must lie in 0..{NO_POSITIVE_LEVEL}, got {value}")
    return value


def resolve_level(threshold: float | None, decision_level: int | None) -> int:
    """Level from exactly one of a threshold or a level; neither given means threshold 0.5."""
    if threshold is not None and decision_level is not None:
        raise ValueError("give either threshold or level, not both")
    if decision_level is not None:
        return check_level(decision_level)
    return level(0.5 if threshold is None else threshold)


@dataclass(frozen=True, eq=False)
class ProbabilityMap:
    """The 8-bit levels (``uint8``, H×W) of one image's probability map, and the image's sample id.

    Every reader and writer of predictions holds maps as this type: the levels are encoded in
    ``from_probability`` and cut in ``mask_at`` only.
    """

    levels: np.ndarray
    sample_id: str

    def __post_init__(self) -> None:
        levels = self.levels
        if not isinstance(levels, np.ndarray) or levels.dtype != np.uint8 or levels.ndim != 2:
            got = f"{levels.dtype} {levels.shape}" if isinstance(levels, np.ndarray) else type(levels).__name__
            raise DataError(f"probability map of {self.sample_id!r} must be 8-bit levels (uint8, H×W), got {got}")
        # Frozen in spirit too: histograms, masks and the stored PNG must all see the same levels.
        levels.setflags(write=False)

    @classmethod
    def from_probability(cls, probability: np.ndarray, sample_id: str) -> ProbabilityMap:
        """Level ``round(255 p)`` of each probability (or score scaled to [0, 1]), clipped to [0, 1] first."""
        return cls(np.rint(np.clip(probability, 0.0, 1.0) * 255.0).astype(np.uint8), sample_id)

    @property
    def shape(self) -> tuple[int, int]:
        return self.levels.shape

    def mask_at(self, decision_level: int) -> np.ndarray:
        """Bool (H, W): the pixels predicted vessel at a decision level (0..256), those whose level is >= it."""
        return self.levels >= check_level(decision_level)

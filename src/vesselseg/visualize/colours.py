"""The report's palette, chosen to stay distinguishable under protan, deutan and tritan colour vision.

The error classes were picked by simulating the three dichromacies (Machado et al. 2009, full
severity) and maximising the smallest CIELAB distance between any two classes and between any class
and the dark greys of the background: near-white, magenta and green keep more than 50 ΔE apart under
all four visions, where the usual green/red/yellow collapses for about one man in twelve. None of the
three is a grey, and everything else in an error overlay is, so counting a class colour counts that
class exactly.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

Rgb = tuple[int, int, int]

TP: Rgb = (235, 235, 255)  # near-white: vessel found
FP: Rgb = (255, 0, 255)  # magenta: false alarm
FN: Rgb = (0, 220, 0)  # green: vessel missed
ERROR_COLOURS: dict[str, Rgb] = {"tp": TP, "fp": FP, "fn": FN}
ERROR_LABELS: dict[str, str] = {"tp": "found (TP)", "fp": "false alarm (FP)", "fn": "missed (FN)"}

# Okabe & Ito's qualitative palette, for one line per predictor in the plots.
PREDICTOR_COLOURS: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
BASELINE_COLOUR = "#8c8c8c"

HEAT_MAP = "magma"  # perceptually uniform and readable without colour vision


def heat_lut() -> np.ndarray:
    """(256, 3) uint8 colours of the heat map, indexed by the stored 8-bit probability."""
    return np.rint(colormaps[HEAT_MAP](np.arange(256) / 255.0)[:, :3] * 255).astype(np.uint8)


def predictor_colour(index: int) -> str:
    return PREDICTOR_COLOURS[index % len(PREDICTOR_COLOURS)]


def hex_colour(rgb: Rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)

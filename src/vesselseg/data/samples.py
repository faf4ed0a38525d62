"""The two shapes a sample takes on its way through data preparation: files found, then arrays loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
OfficialSplit = Literal["train", "test"]
FovSource = Literal["given", "derived", "synthetic"]


@dataclass(frozen=True)
class RawSample:
    """One image of a dataset on disk, as a layout reader finds it; nothing has been opened yet."""

    sample_id: str
    image: Path
    mask: Path
    fov: Path | None = None  # None: the layout has no FOV masks, one is derived from the image
    mask_2nd: Path | None = None  # a second annotator's mask, where the dataset has one
    official_split: OfficialSplit | None = None


@dataclass(frozen=True)
class LoadedSample:
    """A sample's checked pixels: images uint8 (H, W, 3); masks and FOV bool (H, W), all the same size."""

    sample_id: str
    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray
    fov_source: FovSource
    mask_2nd: np.ndarray | None
    official_split: OfficialSplit | None
    source_image: str  # where the pixels came from: a path relative to the dataset folder, or "synthetic:<seed>:<i>"
    source_mask: str

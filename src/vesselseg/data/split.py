"""Deterministic train/val/test assignment and the guard against the same image in two places.

The order in which images are drawn for val and test is the sha256 of ``"<seed>:<sample_id>"``: it
depends on nothing but the seed and the ids (not on numpy's generator, not on listing order), and adding
an image to a dataset does not reshuffle the others.

- Without an official split (or with ``use_official_split: false``): ``test_fraction`` and
  ``val_fraction`` of all images go to test and val, the rest to train.
- With an official split (every sample has one, e.g. DRIVE): the official test images are the test
  split and val is ``val_fraction`` of the official train images. If the dataset's official test part
  is absent (only ``training/`` present), test is drawn from train by ``test_fraction`` as well.

Counts round half up; a non-zero fraction always yields at least one image, and train must keep at
least one, otherwise the dataset is too small for the fractions and that is an error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from vesselseg.config import ConfigModel
from vesselseg.data.samples import OfficialSplit, Split
from vesselseg.errors import DataError


class SplitConfig(ConfigModel):
    """Seed and fractions of the train/val/test split (rules in this module's docstring)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    use_official_split: bool = True

    @model_validator(mode="after")
    def _leave_room_for_training(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction ({self.val_fraction}) + test_fraction ({self.test_fraction}) must be below 1"
            )
        return self


def assign_splits(samples: Sequence[tuple[str, OfficialSplit | None]], cfg: SplitConfig) -> dict[str, Split]:
    """``{sample_id: split}`` for ``(sample_id, official_split)`` pairs."""
    official = cfg.use_official_split and bool(samples) and all(split is not None for _, split in samples)
    if official:
        test = [sid for sid, split in samples if split == "test"]
        pool = [sid for sid, split in samples if split == "train"]
        n_test = 0 if test else _count(cfg.test_fraction, len(pool))
    else:
        test = []
        pool = [sid for sid, _ in samples]
        n_test = _count(cfg.test_fraction, len(pool))
    n_val = _count(cfg.val_fraction, len(pool))
    if n_test + n_val >= len(pool):
        raise DataError(
            f"{len(pool)} images are too few to draw {n_val} for val and {n_test} for test "
            f"(val_fraction={cfg.val_fraction}, test_fraction={cfg.test_fraction}) and keep one for train"
        )
    order = sorted(pool, key=lambda sid: hashlib.sha256(f"{cfg.seed}:{sid}".encode()).hexdigest())
    splits: dict[str, Split] = {sid: "test" for sid in test}
    for rank, sid in enumerate(order):
        splits[sid] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def _count(fraction: float, n: int) -> int:
    return 0 if fraction == 0 else max(1, math.floor(fraction * n + 0.5))


def pixel_sha256(array: np.ndarray) -> str:
    """sha256 of decoded pixel content, shape and dtype included (so a PNG and a TIFF of one picture match)."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ContentRecord:
    sample_id: str
    split: Split
    image_sha256: str
    source: str  # the file the pixels came from, for the error message


class LeakageGuard:
    """Refuses a second image with pixel content already seen, in any split.

    Across splits a duplicate is leakage: the model is evaluated on an image it trained on (or tuned on).
    Within one split it is still an error: a repeated image counts twice and biases that split's metrics.
    """

    def __init__(self) -> None:
        self._seen: dict[str, ContentRecord] = {}

    def add(self, record: ContentRecord) -> None:
        first = self._seen.setdefault(record.image_sha256, record)
        if first is record:
            return
        if first.split != record.split:
            raise DataError(
                f"leakage: {first.source} ({first.split}) and {record.source} ({record.split}) have identical "
                "pixel content, so one image would be both trained or tuned on and evaluated; remove one of them"
            )
        raise DataError(
            f"duplicate images in the {record.split} split: {first.source} and {record.source} have identical "
            "pixel content; a repeated image counts twice and biases the metrics; remove one of them"
        )

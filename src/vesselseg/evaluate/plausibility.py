"""Checks for results no real predictor produces, whatever it says it read.

A prediction set made from the test ground truth (eroded, dilated, salted with noise, or copied) can claim to
have read only the images; these checks look at the predictions themselves. Each compares the binary masks
at the threshold the evaluation scores, inside the FOV, with the ground truth of every evaluated image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict, Field
from scipy import ndimage

from vesselseg.config import ConfigModel
from vesselseg.data import PreparedDataset
from vesselseg.evaluate.honesty import HonestyCheck
from vesselseg.metrics import ProbabilityMap

TOO_GOOD = "too good to be true — investigate: "
_NEIGHBOURS = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.uint8)


class PlausibilityConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    min_pixels: int = Field(300, ge=1, description="subset/superset: at least this many predicted (truth) pixels")
    agreement_ceiling: float = Field(
        0.95, gt=0, le=1, description="mean Dice above which agreement is implausible, where no second observer"
    )
    second_observer_margin: float = Field(
        0.05,
        ge=0,
        le=1,
        description="where a second observer exists, the ceiling is its mean Dice plus this: good models exceed "
        "the second observer a little (they learn the first annotator's style; DRIVE 0.79 vs 0.82-0.83)",
    )
    stray_error_share: float = Field(
        0.25, gt=0, le=1, description="share of error pixels that are stray (see `agreement`) above which errors "
        "look like noise added to the ground truth; measured: pixels flipped at random 0.64-0.81, Frangi <= 0.02"
    )  # fmt: skip
    stray_distance: float = Field(2.0, gt=0, description="px from the nearest truth vessel beyond which a pixel is far")
    min_error_pixels: int = Field(50, ge=1, description="the noise check needs at least this many error pixels")


@dataclass(frozen=True)
class ImageAgreement:
    """One image's binary prediction against its ground truth, inside the FOV."""

    tp: int
    fp: int
    fn: int
    fov_pixels: int
    isolated_errors: int  # error pixels none of whose 8 neighbours is an error
    stray_errors: int  # isolated errors far from every truth vessel: single false pixels in the background

    @property
    def dice(self) -> float:
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2 * self.tp / denominator


def agreement(prediction: np.ndarray, truth: np.ndarray, fov: np.ndarray, stray_distance: float) -> ImageAgreement:
    """Counts inside the FOV. A real predictor errs along vessels (edges, gaps, thin branches missed), in
    connected runs; noise sprinkled on the ground truth errs in single pixels anywhere, mostly in the background."""
    pred, true = prediction & fov, truth & fov
    errors = pred ^ true
    erring_neighbours = ndimage.convolve(errors.astype(np.uint8), _NEIGHBOURS, mode="constant", cval=0)
    isolated = errors & (erring_neighbours == 0)
    far = ndimage.distance_transform_edt(~true) > stray_distance if true.any() else np.ones_like(true)
    return ImageAgreement(
        tp=int((pred & true).sum()),
        fp=int((pred & ~true).sum()),
        fn=int((true & ~pred).sum()),
        fov_pixels=int(fov.sum()),
        isolated_errors=int(isolated.sum()),
        stray_errors=int((isolated & far).sum()),
    )


def human_ceiling(dataset: PreparedDataset, ids: list[str], config: PlausibilityConfig) -> tuple[float, str]:
    """(ceiling, where it comes from): the second observer's mean Dice plus the margin, else the configured one."""
    second = [
        agreement(other, dataset.mask(i), dataset.fov(i), config.stray_distance).dice
        for i in ids
        if (other := dataset.mask_2nd(i)) is not None
    ]
    if not second:
        return config.agreement_ceiling, f"configured ceiling {config.agreement_ceiling:.3f} (no second observer)"
    observer = float(np.mean(second))
    ceiling = min(1.0, observer + config.second_observer_margin)
    return ceiling, (
        f"second observer's mean Dice {observer:.3f} on {len(second)} images + margin "
        f"{config.second_observer_margin:.3f} = {ceiling:.3f}"
    )


def plausibility_checks(
    name: str,
    maps: dict[str, ProbabilityMap],
    truths: dict[str, tuple[np.ndarray, np.ndarray | None]],
    decision_level: int,
    ceiling: tuple[float, str],
    config: PlausibilityConfig,
) -> list[HonestyCheck]:
    """Subset, superset, beyond-human agreement and noise-like errors, for one predictor at its scored level.

    `maps`: the predictor's decoded maps of the images it can be scored on; `truths`: (truth, FOV) of each."""
    images = [
        agreement(prob.mask_at(decision_level), truths[i][0], truths[i][1], config.stray_distance)
        for i, prob in sorted(maps.items())
    ]
    if not images:
        return []
    predicted = sum(a.tp + a.fp for a in images)
    true = sum(a.tp + a.fn for a in images)
    fov = sum(a.fov_pixels for a in images)
    errors = sum(a.fp + a.fn for a in images)
    isolated = sum(a.isolated_errors for a in images)
    stray = sum(a.stray_errors for a in images)
    n = len(images)

    subset = predicted >= config.min_pixels and all(a.fp == 0 for a in images)
    # Predicting (nearly) everything also has recall 1: that is the trivial all-foreground guess, not a copy.
    superset = true >= config.min_pixels and predicted < fov / 2 and all(a.fn == 0 for a in images)
    mean_dice = float(np.mean([a.dice for a in images]))
    limit, source = ceiling
    share = stray / errors if errors else 0.0
    noisy = errors >= config.min_error_pixels and share > config.stray_error_share

    def check(check_name: str, failed: bool, bad: str, good: str) -> HonestyCheck:
        return HonestyCheck(
            name=check_name, predictor=name, passed=not failed, detail=TOO_GOOD + bad if failed else good
        )

    return [
        check(
            "subset_of_truth",
            subset,
            f"precision exactly 1.0 on all {n} images ({predicted} predicted vessel pixels, not one outside the truth)",
            f"{sum(a.fp > 0 for a in images)} of {n} images have false positives (precision < 1)",
        ),
        check(
            "superset_of_truth",
            superset,
            f"recall exactly 1.0 on all {n} images ({true} truth pixels, not one missed) without predicting everything",
            f"{sum(a.fn > 0 for a in images)} of {n} images have false negatives (recall < 1)",
        ),
        check(
            "beyond_human_agreement",
            mean_dice > limit,
            f"mean Dice {mean_dice:.3f} exceeds what annotators reach: {source}",
            f"mean Dice {mean_dice:.3f} within the ceiling: {source}",
        ),
        check(
            "noise_like_errors",
            noisy,
            f"{share:.0%} of {errors} error pixels are single pixels far from any vessel (limit "
            f"{config.stray_error_share:.0%}; {isolated} isolated in all): the signature of noise added to the truth",
            f"{share:.0%} of {errors} error pixels are single pixels far from any vessel (limit "
            f"{config.stray_error_share:.0%}; {isolated} isolated in all)",
        ),
    ]

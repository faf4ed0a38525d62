"""Checks that stop the evaluation from printing a number that does not measure the predictor.

Each check returns a `HonestyCheck`; a failed check fails the stage unless its `allow_*` switch is
set, and is reported either way.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from vesselseg.data import PreparedDataset
from vesselseg.data.prepare import TEST_LABELS_DIR
from vesselseg.metrics import ProbabilityMap, level
from vesselseg.predictions import PredictionSet

# One line per check, for readers of the report: what a pass guarantees.
EXPLANATIONS = {
    "train_test_overlap": "no scored image's pixels also appear in the training split",
    "threshold_on_scored_split": "the decision threshold is chosen on another split than the one scored",
    "prediction_identical_to_truth": "no prediction equals its ground truth bit for bit",
    "truth_in_provenance": "the predictor's own record of files it read lists no scored ground truth",
    "missing_predictions": "every scored image has a prediction (none left out to flatter the mean)",
    "size_mismatch": "every prediction has its image's native size (nothing resized before scoring)",
    "subset_of_truth": "not every image has precision exactly 1.0 (what ground truth shrunk, e.g. eroded, gives)",
    "superset_of_truth": "not every image has recall exactly 1.0 (what ground truth grown, e.g. dilated, gives)",
    "beyond_human_agreement": "agreement with the truth stays below what two human annotators reach",
    "noise_like_errors": "errors are not mostly isolated single pixels (what noise sprinkled on the truth gives)",
}


class HonestyCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    predictor: str | None = None
    passed: bool
    allowed: bool = False
    detail: str

    @property
    def blocking(self) -> bool:
        return not self.passed and not self.allowed


def identical_to_truth(
    name: str, maps: dict[str, ProbabilityMap], truths: dict[str, np.ndarray], ids: list[str]
) -> HonestyCheck:
    """Any prediction whose binary mask at 0.5 equals the ground truth bit for bit, over the whole image.

    `maps`: the predictor's decoded maps of the images it can be scored on (present, of the truth's size)."""
    cut = level(0.5)
    identical = [i for i in ids if i in maps and np.array_equal(maps[i].mask_at(cut), truths[i][0])]
    return HonestyCheck(
        name="prediction_identical_to_truth",
        predictor=name,
        passed=not identical,
        detail=(
            f"{len(identical)} of {len(ids)} predictions equal their ground truth exactly: {identical[:5]}"
            if identical
            else f"none of {len(ids)} predictions equals its ground truth"
        ),
    )


def truth_in_provenance(dataset: PreparedDataset, preds: PredictionSet, split: str) -> HonestyCheck:
    """The predictor's record of files it read must not include ground truth of the evaluated split."""
    truth_files = set()
    for column in ("mask", "mask_2nd"):
        if column in dataset.index:
            rows = dataset.index[dataset.index["split"] == split][column]
            # As the dataset names them, and as the test-label artifact does (without its folder).
            truth_files.update(str(path) for path in rows.dropna())
            truth_files.update(str(path).removeprefix(f"{TEST_LABELS_DIR}/") for path in rows.dropna())
    read = set(preds.info.read_files)
    leaked = sorted(read & truth_files)
    if not read:
        return HonestyCheck(
            name="truth_in_provenance",
            predictor=preds.info.name,
            passed=False,
            detail="the prediction set records no input files, so its provenance cannot be checked",
        )
    return HonestyCheck(
        name="truth_in_provenance",
        predictor=preds.info.name,
        passed=not leaked,
        detail=(
            f"the predictor read {len(leaked)} {split}-split ground-truth files: {leaked[:5]}"
            if leaked
            else f"{len(read)} files read, none of them {split}-split ground truth"
        ),
    )


def train_test_overlap(dataset: PreparedDataset, split: str) -> HonestyCheck:
    """Evaluated images whose pixel content also appears in the training split."""
    index = dataset.index
    train = index[index["split"] == "train"]
    evaluated = index[index["split"] == split]
    shared = sorted(set(evaluated["image_sha256"]) & set(train["image_sha256"]))
    names = sorted(evaluated[evaluated["image_sha256"].isin(shared)]["sample_id"])
    return HonestyCheck(
        name="train_test_overlap",
        passed=not shared,
        detail=(
            f"{len(names)} {split} images also appear in the training split: {names[:5]}"
            if shared
            else f"no {split} image content appears in the training split"
        ),
    )


def coverage(
    preds: PredictionSet, truths: dict[str, tuple[np.ndarray, np.ndarray | None]], ids: list[str]
) -> tuple[HonestyCheck, HonestyCheck]:
    """Every evaluated image has a prediction, and each prediction has the image's native size (its truth's)."""
    missing = [i for i in ids if i not in preds]
    wrong = []
    for sample_id in ids:
        if sample_id in missing:
            continue
        got = preds.shape(sample_id)
        want = truths[sample_id][0].shape
        if got != want:
            wrong.append(f"{sample_id}: {got[0]}x{got[1]} vs truth {want[0]}x{want[1]}")
    return (
        HonestyCheck(
            name="missing_predictions",
            predictor=preds.info.name,
            passed=not missing,
            detail=f"{len(missing)} images without prediction: {missing[:5]}" if missing else "every image predicted",
        ),
        HonestyCheck(
            name="size_mismatch",
            predictor=preds.info.name,
            passed=not wrong,
            detail=(
                f"{len(wrong)} predictions are not at native size (never resized here): {wrong[:3]}"
                if wrong
                else "every prediction at native size"
            ),
        ),
    )


def threshold_on_scored_split(threshold_split: str, split: str) -> HonestyCheck:
    """Choosing the decision threshold on the images being scored reports an optimistic number."""
    same = threshold_split == split
    return HonestyCheck(
        name="threshold_on_scored_split",
        passed=not same,
        detail=(
            f"the threshold is chosen on {split!r}, the split being scored"
            if same
            else f"threshold chosen on {threshold_split!r}, scores on {split!r}"
        ),
    )

"""Prediction sets made from the test ground truth, claiming to have read only the images, are refused or
flagged; real predictions (Frangi's) pass. The crafted sets are those a new user built against the demo:
ground truth eroded by one pixel, dilated by one pixel, with 0.5 % of its pixels flipped, and copied."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vesselseg.baseline import FrangiConfig, frangi_predictions
from vesselseg.data import DataPrepConfig, PreparedDataset, prepare_dataset
from vesselseg.data.synthetic import generate_fundus
from vesselseg.errors import HonestyError
from vesselseg.evaluate import EvaluateConfig, evaluate
from vesselseg.evaluate.plausibility import TOO_GOOD, PlausibilityConfig, human_ceiling
from vesselseg.evaluate.table import format_table
from vesselseg.metrics import ProbabilityMap
from vesselseg.predictions import PredictionSet, PredictionWriter, PredictorInfo

IMPLAUSIBLE = ("subset_of_truth", "superset_of_truth", "beyond_human_agreement", "noise_like_errors")
ALLOW_ALL = {f"allow_{name}": True for name in (*IMPLAUSIBLE, "identical_to_truth")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("plausibility") / "dataset"
    prepare_dataset(DataPrepConfig.model_validate({"synthetic": {"count": 12, "size": 192, "seed": 5}}), root)
    return PreparedDataset(root)


def _from_truth(dataset: PreparedDataset, root: Path, name: str, change: Callable[[np.ndarray], np.ndarray]):
    """A prediction set computed from each image's ground truth whose provenance lies: only the images read."""
    writer = PredictionWriter(root)
    read = []
    for split in ("val", "test"):
        for sample_id in dataset.ids(split):
            writer.add(split, ProbabilityMap.from_probability(change(dataset.mask(sample_id)), sample_id))
            read.append(f"images/{sample_id}.png")
    info = PredictorInfo(name=name, threshold=0.5, threshold_source="val", calibrated=True, read_files=read)
    writer.close(info)
    return PredictionSet(root)


def _flip(share: float, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    return lambda mask: mask ^ (rng.random(mask.shape) < share)


CRAFTED = {
    # name: (change of the truth, the checks that must fail)
    "eroded": (ndimage.binary_erosion, {"subset_of_truth"}),
    "dilated": (ndimage.binary_dilation, {"superset_of_truth"}),
    "salted": (_flip(0.005), {"noise_like_errors", "beyond_human_agreement"}),
    "copied": (lambda mask: mask, {"prediction_identical_to_truth", "beyond_human_agreement", *IMPLAUSIBLE[:2]}),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_prediction_sets_made_from_the_truth_are_refused(dataset: PreparedDataset, tmp_path: Path, name: str) -> None:
    change, expected = CRAFTED[name]
    preds = _from_truth(dataset, tmp_path / "p", name, change)
    with pytest.raises(HonestyError) as refused:
        evaluate(dataset, [preds], EvaluateConfig(n_boot=20), tmp_path / "out")
    failed = {c["name"] for c in json.loads((tmp_path / "out" / "honesty.json").read_text()) if not c["passed"]}
    assert failed == expected, refused.value
    assert "truth_in_provenance" not in failed, "the provenance lies convincingly: only the content can tell"
    assert not (tmp_path / "out" / "summary.json").exists(), "nothing is scored once a check refuses"
    for check in expected & set(IMPLAUSIBLE):
        assert f"{check} [{name}]: {TOO_GOOD}" in str(refused.value)


def test_allowed_implausible_results_are_scored_but_flagged(dataset: PreparedDataset, tmp_path: Path) -> None:
    preds = _from_truth(dataset, tmp_path / "p", "salted", _flip(0.005))
    summary = evaluate(dataset, [preds], EvaluateConfig(n_boot=20, **ALLOW_ALL), tmp_path / "out")
    flagged = {c.name: c for c in summary.honesty if not c.passed}
    assert set(flagged) == {"noise_like_errors", "beyond_human_agreement"}
    assert all(c.allowed and c.detail.startswith(TOO_GOOD) for c in flagged.values())
    assert summary.metrics["salted"]["dice"] > 0.95
    table = format_table(summary)
    assert "honesty checks FAILED but allowed" in table and TOO_GOOD in table


def test_frangi_passes_every_check(dataset: PreparedDataset, tmp_path: Path) -> None:
    frangi_predictions(dataset, ["val", "test"], "val", FrangiConfig(), tmp_path / "frangi")
    summary = evaluate(dataset, [PredictionSet(tmp_path / "frangi")], EvaluateConfig(n_boot=20), tmp_path / "out")
    checks = {c.name: c for c in summary.honesty}
    assert set(IMPLAUSIBLE) <= set(checks)
    assert [c.detail for c in summary.honesty if not c.passed] == []
    assert 0.3 < summary.metrics["frangi"]["dice"] < 0.95


def test_each_check_stays_silent_just_inside_its_limit(dataset: PreparedDataset, tmp_path: Path) -> None:
    """Not a blanket refusal: ground truth changed in a realistic way on part of each image passes."""

    def realistic(mask: np.ndarray) -> np.ndarray:
        # Boundary errors both ways (grown on the left half, shrunk on the right) and a few missed thin runs.
        half = mask.shape[1] // 2
        out = mask.copy()
        out[:, :half] = ndimage.binary_dilation(mask)[:, :half]
        out[:, half:] = ndimage.binary_erosion(mask)[:, half:]
        return out

    preds = _from_truth(dataset, tmp_path / "p", "realistic", realistic)
    summary = evaluate(dataset, [preds], EvaluateConfig(n_boot=20), tmp_path / "out")
    assert [c.detail for c in summary.honesty if not c.passed] == []


def _drive_with_second_observer(root: Path) -> Path:
    """A DRIVE-layout folder whose second observer draws every vessel one pixel to the right."""
    for number, part in [*((21 + i, "training") for i in range(4)), *((1 + i, "test") for i in range(3))]:
        f, n = generate_fundus(128, seed=7, index=number), f"{number:02d}"
        for folder, name, array in (
            ("images", f"{n}_{part}.tif", f.image),
            ("1st_manual", f"{n}_manual1.gif", np.where(f.mask, 255, 0).astype(np.uint8)),
            ("mask", f"{n}_{part}_mask.gif", np.where(f.fov, 255, 0).astype(np.uint8)),
            ("2nd_manual", f"{n}_manual2.gif", np.where(np.roll(f.mask, 1, axis=1), 255, 0).astype(np.uint8)),
        ):
            if folder == "2nd_manual" and part != "test":
                continue
            (root / part / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / part / folder / name)
    return root


def test_second_observer_sets_the_agreement_ceiling(tmp_path: Path) -> None:
    prepare_dataset(DataPrepConfig(source=str(_drive_with_second_observer(tmp_path / "drive"))), tmp_path / "ds")
    dataset = PreparedDataset(tmp_path / "ds")
    ids = dataset.ids("test")
    ceiling, source = human_ceiling(dataset, ids, PlausibilityConfig())
    observer = np.mean([2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in (
        (dataset.mask(i) & dataset.fov(i), dataset.mask_2nd(i) & dataset.fov(i)) for i in ids)])  # fmt: skip
    assert ceiling == pytest.approx(observer + 0.05) and "second observer" in source
    assert ceiling < 0.9, "a one-pixel shift of thin vessels agrees far less than the default ceiling"

    def better_than_the_observer(mask: np.ndarray) -> np.ndarray:
        # Thin-vessel style boundary errors along rows; Dice between the observer's and the default ceiling.
        out = mask.copy()
        out[::3] = ndimage.binary_erosion(mask)[::3]
        out[1::3] = ndimage.binary_dilation(mask)[1::3]
        return out

    preds = _from_truth(dataset, tmp_path / "p", "better", better_than_the_observer)
    with pytest.raises(HonestyError, match=rf"beyond_human_agreement \[better\]: {TOO_GOOD}.*second observer"):
        evaluate(dataset, [preds], EvaluateConfig(n_boot=20), tmp_path / "out")
    relaxed = EvaluateConfig(n_boot=20, plausibility=PlausibilityConfig(second_observer_margin=0.5))
    summary = evaluate(dataset, [preds], relaxed, tmp_path / "relaxed")
    assert observer + 0.05 < summary.metrics["better"]["dice"] < 0.95
    assert [c.detail for c in summary.honesty if not c.passed] == []

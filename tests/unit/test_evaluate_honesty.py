"""The evaluation's honesty checks fire on crafted leaks and stay silent on honest predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vesselseg.baseline import FrangiConfig, frangi_predictions
from vesselseg.data import DataPrepConfig, PreparedDataset, prepare_dataset
from vesselseg.errors import HonestyError
from vesselseg.evaluate import EvaluateConfig, evaluate
from vesselseg.metrics import ProbabilityMap
from vesselseg.predictions import PredictionSet, PredictionWriter, PredictorInfo


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("honesty") / "dataset"
    prepare_dataset(DataPrepConfig.model_validate({"synthetic": {"count": 8, "size": 96, "seed": 2}}), root)
    return PreparedDataset(root)


@pytest.fixture(scope="module")
def frangi(dataset: PreparedDataset, tmp_path_factory: pytest.TempPathFactory) -> PredictionSet:
    out = tmp_path_factory.mktemp("frangi") / "preds"
    frangi_predictions(dataset, ["val", "test"], "val", FrangiConfig(), out)
    return PredictionSet(out)


def _write(dataset: PreparedDataset, root: Path, name: str, make, read_files: list[str]) -> PredictionSet:
    writer = PredictionWriter(root)
    for split in ("val", "test"):
        for sample_id in dataset.ids(split):
            levels = make(sample_id)
            if levels is not None:
                writer.add(split, ProbabilityMap(levels, sample_id))
    writer.close(
        PredictorInfo(name=name, threshold=0.5, threshold_source="test", calibrated=True, read_files=read_files)
    )
    return PredictionSet(root)


def _noisy(dataset: PreparedDataset, seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda i: rng.integers(0, 256, dataset.mask(i).shape, dtype=np.uint8)


def test_honest_predictions_pass_every_check(dataset: PreparedDataset, frangi: PredictionSet, tmp_path: Path) -> None:
    summary = evaluate(dataset, [frangi], EvaluateConfig(n_boot=50), tmp_path)
    assert [c.name for c in summary.honesty if not c.passed] == []
    assert {c.name for c in summary.honesty} >= {
        "train_test_overlap",
        "threshold_on_scored_split",
        "prediction_identical_to_truth",
        "truth_in_provenance",
        "missing_predictions",
        "size_mismatch",
    }


def test_test_truth_in_provenance_is_refused(dataset: PreparedDataset, tmp_path: Path) -> None:
    test_mask = dataset.index.set_index("sample_id").loc[dataset.ids("test")[0], "mask"]
    assert test_mask.startswith("test_labels/masks/")
    for read in (test_mask, test_mask.removeprefix("test_labels/")):  # the dataset's name, the label artifact's
        preds = _write(dataset, tmp_path / read, "leaky", _noisy(dataset), ["images/a.png", read])
        with pytest.raises(HonestyError, match=rf"truth_in_provenance \[leaky\].*{read}"):
            evaluate(dataset, [preds], EvaluateConfig(n_boot=50), tmp_path / "out")


def test_missing_provenance_is_refused(dataset: PreparedDataset, tmp_path: Path) -> None:
    preds = _write(dataset, tmp_path / "p", "anonymous", _noisy(dataset), [])
    with pytest.raises(HonestyError, match="records no input files"):
        evaluate(dataset, [preds], EvaluateConfig(n_boot=50), tmp_path / "out")


def test_missing_prediction_is_refused_or_skipped_when_allowed(dataset: PreparedDataset, tmp_path: Path) -> None:
    skipped = dataset.ids("test")[0]
    noisy = _noisy(dataset)
    preds = _write(dataset, tmp_path / "p", "partial", lambda i: None if i == skipped else noisy(i), ["images/x.png"])
    with pytest.raises(HonestyError, match=rf"missing_predictions.*{skipped}"):
        evaluate(dataset, [preds], EvaluateConfig(n_boot=50), tmp_path / "out")
    summary = evaluate(dataset, [preds], EvaluateConfig(n_boot=50, allow_missing_predictions=True), tmp_path / "ok")
    table = pd.read_parquet(tmp_path / "ok" / "per_image.parquet")
    assert skipped not in set(table[table["predictor"] == "partial"]["sample_id"])
    assert any(c.name == "missing_predictions" and c.allowed and not c.passed for c in summary.honesty)


def test_resized_prediction_is_refused(dataset: PreparedDataset, tmp_path: Path) -> None:
    odd = dataset.ids("test")[-1]
    noisy = _noisy(dataset)
    preds = _write(
        dataset, tmp_path / "p", "resized", lambda i: noisy(i)[:-2] if i == odd else noisy(i), ["images/x.png"]
    )
    with pytest.raises(HonestyError, match=rf"size_mismatch.*{odd}"):
        evaluate(dataset, [preds], EvaluateConfig(n_boot=50), tmp_path / "out")


def test_test_image_also_in_training_is_refused(
    dataset: PreparedDataset, frangi: PredictionSet, tmp_path: Path
) -> None:
    # Craft the leak the data-prep guard would refuse: a test image whose pixels equal a training image's.
    index = dataset.index.copy()
    train_hash = index.loc[index["split"] == "train", "image_sha256"].iloc[0]
    leaked = index.index[index["split"] == "test"][0]
    index.loc[leaked, "image_sha256"] = train_hash
    dataset.index = index
    try:
        with pytest.raises(HonestyError, match="train_test_overlap"):
            evaluate(dataset, [frangi], EvaluateConfig(n_boot=50), tmp_path)
    finally:
        dataset.index = PreparedDataset(dataset.root).index


def test_threshold_chosen_on_the_scored_split_is_refused(
    dataset: PreparedDataset, frangi: PredictionSet, tmp_path: Path
) -> None:
    with pytest.raises(HonestyError, match="threshold_on_scored_split"):
        evaluate(dataset, [frangi], EvaluateConfig(n_boot=50, threshold_split="test"), tmp_path)

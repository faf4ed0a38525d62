"""The prediction-set format has one owner: inference's resume state writes it, evaluation decodes each map once."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vesselseg.baseline import FrangiConfig, frangi_predictions
from vesselseg.data import DataPrepConfig, PreparedDataset, prepare_dataset
from vesselseg.evaluate import EvaluateConfig, evaluate
from vesselseg.infer.pipelined import ImageResult
from vesselseg.infer.runner import ResumeState, finished_records, write_prediction_set
from vesselseg.metrics import ProbabilityMap
from vesselseg.predictions import PredictionSet, PredictorInfo


def test_resume_state_maps_are_published_as_they_are(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = {f"img{i}": ProbabilityMap(rng.integers(0, 256, (20 + i, 30), dtype=np.uint8), f"img{i}") for i in range(3)}
    state = ResumeState(tmp_path / "state")
    for prob in maps.values():
        state.commit(ImageResult(prob, 1, "[SEG]"), "test")
    info = PredictorInfo(name="model", threshold=0.5, threshold_source="fixed", calibrated=True, read_files=[])
    write_prediction_set(state, finished_records(state, list(maps)), tmp_path / "out", info)

    # The set holds the state's own files (no decoding and encoding again), and only the format's files.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.parquet", "predictor.json", "probs"]
    published = PredictionSet(tmp_path / "out")
    for sample_id, prob in maps.items():
        assert os.path.samefile(tmp_path / "out" / "probs" / f"{sample_id}.png", state.prob_path(sample_id))
        np.testing.assert_array_equal(published.prob(sample_id).levels, prob.levels)
        assert published.shape(sample_id) == prob.shape
    assert list(published.table["n_seg"]) == [1, 1, 1] and set(published.table["split"]) == {"test"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("predictions") / "dataset"
    prepare_dataset(DataPrepConfig.model_validate({"synthetic": {"count": 8, "size": 96, "seed": 2}}), root)
    return PreparedDataset(root)


def test_evaluate_decodes_each_map_once(dataset: PreparedDataset, tmp_path: Path, monkeypatch) -> None:
    frangi_predictions(dataset, ["val", "test"], "val", FrangiConfig(), tmp_path / "frangi")
    decoded: Counter[str] = Counter()
    prob = PredictionSet.prob

    def counting(self: PredictionSet, sample_id: str) -> ProbabilityMap:
        decoded[sample_id] += 1
        return prob(self, sample_id)

    monkeypatch.setattr(PredictionSet, "prob", counting)
    evaluate(dataset, [PredictionSet(tmp_path / "frangi")], EvaluateConfig(n_boot=10), tmp_path / "evaluation")
    assert set(decoded) == set(dataset.ids("val") + dataset.ids("test"))
    assert max(decoded.values()) == 1, decoded

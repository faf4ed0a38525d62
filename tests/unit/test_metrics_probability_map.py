"""The one type for 8-bit probability maps: encoding, the cut at a level, refusals, and the file round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vesselseg.errors import DataError
from vesselseg.metrics import ProbabilityMap, level
from vesselseg.predictions import PredictionSet, PredictionWriter, PredictorInfo


def test_every_level_survives_probability_and_back() -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(ProbabilityMap.from_probability(levels / 255.0, "ramp").levels, levels)
    p = np.random.default_rng(0).random((30, 40))
    encoded = ProbabilityMap.from_probability(p, "random").levels
    assert np.abs(encoded / 255.0 - p).max() <= 0.5 / 255 + 1e-12  # rounded, not truncated
    clipped = ProbabilityMap.from_probability(np.array([[-0.3, 1.7]]), "outside").levels
    assert clipped.tolist() == [[0, 255]]


def test_the_cut_is_level_at_least_the_decision_level() -> None:
    prob = ProbabilityMap(np.array([[0, 127, 128, 255]], np.uint8), "edges")
    assert prob.mask_at(level(0.5)).tolist() == [[False, False, True, True]]
    assert prob.mask_at(127).tolist() == [[False, True, True, True]]
    assert prob.mask_at(255).tolist() == [[False, False, False, True]]
    assert prob.mask_at(0).all() and not prob.mask_at(256).any()
    with pytest.raises(ValueError, match="read-only"):
        prob.levels[0, 0] = 200  # a map cannot change under the masks already cut from it
    for bad in (0.5, 257, -1, True):
        with pytest.raises(ValueError, match="level"):
            prob.mask_at(bad)


@pytest.mark.parametrize(
    "levels",
    [np.zeros((4, 5), np.float32), np.zeros((4, 5), np.uint16), np.zeros((4, 5, 3), np.uint8), np.zeros(5, np.uint8)],
    ids=["float32", "uint16", "rgb", "1-d"],
)
def test_anything_but_2d_uint8_is_refused_naming_the_sample(levels: np.ndarray) -> None:
    with pytest.raises(DataError, match=r"'img7'.*uint8.*got"):
        ProbabilityMap(levels, "img7")


def test_a_probability_of_the_wrong_shape_is_refused_naming_the_sample() -> None:
    with pytest.raises(DataError, match=r"'img8'.*\(2, 3, 3\)"):
        ProbabilityMap.from_probability(np.zeros((2, 3, 3)), "img8")
    with pytest.raises(DataError, match="'img9'.*list"):
        ProbabilityMap([[0, 1]], "img9")  # type: ignore[arg-type]


def test_a_map_is_written_and_read_back_as_it_was(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    maps = [ProbabilityMap(rng.integers(0, 256, (9 + i, 7), dtype=np.uint8), f"img{i}") for i in range(2)]
    writer = PredictionWriter(tmp_path / "set")
    for prob in maps:
        writer.add("test", prob)
    writer.close(PredictorInfo(name="m", threshold=0.5, threshold_source="fixed", calibrated=True, read_files=[]))
    stored = PredictionSet(tmp_path / "set")
    assert stored.ids("test") == ["img0", "img1"]
    for prob in maps:
        back = stored.prob(prob.sample_id)
        assert back.sample_id == prob.sample_id and stored.shape(prob.sample_id) == prob.shape
        np.testing.assert_array_equal(back.levels, prob.levels)


def test_a_stored_map_that_is_not_8_bit_levels_is_refused_naming_file_and_sample(tmp_path: Path) -> None:
    writer = PredictionWriter(tmp_path / "set")
    writer.add("test", ProbabilityMap(np.zeros((6, 6), np.uint8), "img0"))
    writer.close(PredictorInfo(name="m", threshold=0.5, threshold_source="fixed", calibrated=True, read_files=[]))
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "set" / "probs" / "img0.png")
    with pytest.raises(DataError, match=r"probs/img0\.png.*'img0'.*\(6, 6, 3\)"):
        PredictionSet(tmp_path / "set").prob("img0")

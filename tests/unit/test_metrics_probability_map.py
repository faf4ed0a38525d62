"""The one type for 8-bit probability maps: encoding, the cut at a level, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from vesselseg.errors import DataError
from vesselseg.metrics import ProbabilityMap, level


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

"""AUC-ROC, average precision and curve points from histograms against scikit-learn."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from vesselseg.errors import DataError
from vesselseg.metrics import (
    ProbabilityMap,
    auc_roc,
    average_precision,
    constant_prediction_counts,
    image_counts,
    pool,
    pr_curve_points,
    roc_curve_points,
)


def case(seed: int, n_values: int, shape=(64, 48), vessel=0.15):
    """Random map using ``n_values`` distinct stored values: few values mean heavy ties."""
    rng = np.random.default_rng(seed)
    truth = rng.random(shape) < vessel
    values = np.sort(rng.choice(256, size=n_values, replace=False)).astype(np.uint8)
    index = np.clip(rng.normal(0.3 + 0.4 * truth, 0.3) * n_values, 0, n_values - 1).astype(int)
    fov = rng.random(shape) < 0.85
    return ProbabilityMap(values[index], f"case {seed}"), truth, fov


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_values", [1, 2, 3, 17, 256])
def test_auc_and_ap_match_sklearn(seed, n_values):
    prob, truth, fov = case(seed, n_values)
    counts = image_counts(prob, truth, fov)
    y, score = truth[fov], prob.levels[fov]
    assert auc_roc(counts) == pytest.approx(roc_auc_score(y, score), abs=1e-9, rel=0)
    assert average_precision(counts) == pytest.approx(average_precision_score(y, score), abs=1e-9, rel=0)


@pytest.mark.parametrize("vessel", [0.001, 0.5, 0.999])
def test_auc_and_ap_with_rare_classes(vessel):
    prob, truth, fov = case(11, 256, shape=(120, 110), vessel=vessel)
    truth[0, 0], truth[0, 1], fov[0, :2] = True, False, True  # both classes present
    counts = image_counts(prob, truth, fov)
    assert auc_roc(counts) == pytest.approx(roc_auc_score(truth[fov], prob.levels[fov]), abs=1e-9, rel=0)
    assert average_precision(counts) == pytest.approx(
        average_precision_score(truth[fov], prob.levels[fov]), abs=1e-9, rel=0
    )


def test_pooled_auc_and_ap_match_sklearn_on_concatenated_pixels():
    cases = [case(s, 40 + s) for s in range(4)]
    pooled = pool(image_counts(*c) for c in cases)
    y = np.concatenate([t[f] for _, t, f in cases])
    score = np.concatenate([p.levels[f] for p, _, f in cases])
    assert auc_roc(pooled) == pytest.approx(roc_auc_score(y, score), abs=1e-9, rel=0)
    assert average_precision(pooled) == pytest.approx(average_precision_score(y, score), abs=1e-9, rel=0)


def test_perfect_and_reversed_rankings():
    truth = np.array([[True, True, False, False]])
    counts = image_counts(ProbabilityMap(np.array([[200, 150, 100, 3]], np.uint8), "ranked"), truth)
    assert auc_roc(counts) == 1.0 and average_precision(counts) == 1.0
    counts = image_counts(ProbabilityMap(np.array([[3, 100, 150, 200]], np.uint8), "reversed"), truth)
    assert auc_roc(counts) == 0.0
    assert average_precision(counts) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_constant_prediction_is_chance():
    _, truth, fov = case(2, 5)
    for value in (0, 255):
        counts = constant_prediction_counts(truth, fov, value)
        assert auc_roc(counts) == 0.5
        assert average_precision(counts) == pytest.approx(truth[fov].mean())


def test_undefined_when_a_class_is_missing():
    prob = ProbabilityMap(np.array([[10, 20], [30, 40]], np.uint8), "small")
    no_vessel = image_counts(prob, np.zeros((2, 2), bool))
    only_vessel = image_counts(prob, np.ones((2, 2), bool))
    assert math.isnan(auc_roc(no_vessel)) and math.isnan(auc_roc(only_vessel))
    assert math.isnan(average_precision(no_vessel))
    assert average_precision(only_vessel) == 1.0
    with pytest.raises(DataError):
        roc_curve_points(only_vessel)
    with pytest.raises(DataError):
        pr_curve_points(no_vessel)


@pytest.mark.parametrize("n_values", [2, 30, 256])
def test_roc_curve_points_match_sklearn(n_values):
    prob, truth, fov = case(4, n_values)
    curve = roc_curve_points(image_counts(prob, truth, fov))
    fpr, tpr, thresholds = roc_curve(truth[fov], prob.levels[fov], drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.tpr, tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(curve.levels[1:], thresholds[1:])
    assert curve.levels[0] == 256 and curve.thresholds[0] > 1.0
    assert len(curve.levels) <= 257
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(auc_roc(image_counts(prob, truth, fov)))


@pytest.mark.parametrize("n_values", [2, 30, 256])
def test_pr_curve_points_match_sklearn(n_values):
    prob, truth, fov = case(5, n_values)
    curve = pr_curve_points(image_counts(prob, truth, fov))
    precision, recall, thresholds = precision_recall_curve(truth[fov], prob.levels[fov])
    # scikit-learn lists the loosest threshold first and appends the (recall 0, precision 1) end.
    np.testing.assert_allclose(curve.precision, precision[::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.recall, recall[::-1], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(curve.levels[1:], thresholds[::-1])

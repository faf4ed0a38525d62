"""Micro/macro aggregation, bootstrap CIs, cIoU/gIoU, threshold choice and trivial baselines."""

import math

import numpy as np
import pytest
from skimage.morphology import skeletonize
from sklearn.metrics import average_precision_score, f1_score, jaccard_score, roc_auc_score

from vesselseg.errors import DataError
from vesselseg.metrics import (
    MACRO_NAMES,
    SCORE_NAMES,
    ProbabilityMap,
    aggregate,
    best_threshold,
    ciou,
    constant_prediction,
    evaluate_image,
    giou,
    image_counts,
    level,
)


def image(seed: int, vessel: float, quality: float, shape=(48, 52)):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape) < vessel
    prob = ProbabilityMap(np.clip(rng.normal(90 + quality * truth, 45), 0, 255).astype(np.uint8), f"image {seed}")
    fov = np.ones(shape, bool)
    fov[:, :4] = False
    return prob, truth, fov


@pytest.fixture(scope="module")
def images():
    # A large easy image and small hard ones, so pooled and per-image averages disagree.
    return [image(0, 0.40, 160, shape=(160, 160))] + [image(s, 0.05, 40) for s in range(1, 6)]


@pytest.fixture(scope="module")
def results(images):
    return [evaluate_image(p, t, f) for p, t, f in images]


def test_micro_matches_sklearn_on_pooled_pixels(images, results):
    summary = aggregate(results, n_boot=200)
    y = np.concatenate([t[f] for _, t, f in images])
    score = np.concatenate([p.levels[f] for p, _, f in images])
    pred = score >= level(0.5)
    micro = summary["micro"]
    assert micro["dice"] == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert micro["iou"] == pytest.approx(jaccard_score(y, pred), abs=1e-12)
    assert micro["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-9)
    assert micro["ap"] == pytest.approx(average_precision_score(y, score), abs=1e-9)
    assert micro["vessel_fraction"] == pytest.approx(y.mean())
    assert summary["ciou"] == pytest.approx(micro["iou"])
    assert summary["n_images"] == summary["fov_images"] == len(images)


def test_macro_is_mean_over_images_and_differs_from_micro(results):
    summary = aggregate(results, n_boot=200)
    for name in SCORE_NAMES:
        assert summary["macro"][name]["mean"] == pytest.approx(np.mean([r.scores[name] for r in results]))
    assert summary["macro"]["cldice"]["mean"] == pytest.approx(np.mean([r.cldice for r in results]))
    assert summary["giou"] == pytest.approx(summary["macro"]["iou"]["mean"])
    assert summary["macro"]["dice"]["mean"] < summary["micro"]["dice"] - 0.1


def test_macro_ignores_undefined_auc():
    a = evaluate_image(*image(1, 0.2, 100))
    no_vessel = np.zeros((48, 52), bool)
    b = evaluate_image(ProbabilityMap(np.full((48, 52), 10, np.uint8), "no vessel"), no_vessel)
    assert math.isnan(b.auc)
    summary = aggregate([a, b], n_boot=100)
    assert summary["macro"]["auc"]["mean"] == a.auc and summary["macro"]["auc"]["n"] == 1
    assert summary["macro"]["dice"]["n"] == 2
    assert b.scores["dice"] == 1.0  # nothing to find, nothing predicted


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean(results):
    first = aggregate(results, n_boot=500, seed=3)["macro"]
    assert first == aggregate(results, n_boot=500, seed=3)["macro"]
    assert first != aggregate(results, n_boot=500, seed=4)["macro"]
    assert set(first) == set(MACRO_NAMES)
    for name, stats in first.items():
        assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"], name
    assert first["dice"]["ci_low"] < first["dice"]["ci_high"]


def test_bootstrap_matches_a_plain_loop(results):
    # Same resamples drawn one by one: the vectorised weights must give the same means.
    n_boot, n = 50, len(results)
    draws = np.random.default_rng(7).integers(0, n, size=(n_boot, n))
    dice = np.array([r.scores["dice"] for r in results])
    means = np.array([dice[d].mean() for d in draws])
    stats = aggregate(results, n_boot=n_boot, seed=7)["macro"]["dice"]
    assert stats["ci_low"] == pytest.approx(np.quantile(means, 0.025))
    assert stats["ci_high"] == pytest.approx(np.quantile(means, 0.975))


def test_ciou_and_giou_by_hand():
    truth = np.zeros((4, 4), bool)
    truth[0, :2] = True
    hit = evaluate_image(ProbabilityMap((truth * 255).astype(np.uint8), "hit"), truth)  # IoU 1 (2/2)
    half = np.zeros((4, 4), np.uint8)
    half[0, 0] = half[3, 3] = 255
    miss = evaluate_image(ProbabilityMap(half, "miss"), truth)  # intersection 1, union 3
    empty = evaluate_image(ProbabilityMap(np.zeros((4, 4), np.uint8), "empty"), np.zeros((4, 4), bool))  # union 0
    assert ciou([hit, miss, empty]) == pytest.approx((2 + 1) / (2 + 3))
    assert giou([hit, miss, empty]) == pytest.approx((1 + 1 / 3 + 1) / 3)


def test_best_threshold_matches_brute_force_with_sklearn(images):
    counts = [image_counts(*c) for c in images]
    best, dice = best_threshold(counts)
    y = np.concatenate([t[f] for _, t, f in images])
    score = np.concatenate([p.levels[f] for p, _, f in images])
    brute = {lvl: f1_score(y, score >= lvl) for lvl in range(256)}
    top = max(brute.values())
    assert dice == pytest.approx(top, abs=1e-12)
    assert best == min(lvl for lvl, value in brute.items() if value == top)


def test_trivial_baselines_use_the_same_path(images):
    prob, truth, fov = images[1]
    background = evaluate_image(constant_prediction(truth, 0, "image 1"), truth, fov)
    foreground = evaluate_image(constant_prediction(truth, 255, "image 1"), truth, fov)
    fraction = truth[fov].mean()
    assert background.scores["accuracy"] == pytest.approx(1 - fraction)
    assert background.scores["dice"] == 0.0 and background.cldice == 0.0
    assert foreground.scores["recall"] == 1.0
    assert foreground.scores["dice"] == pytest.approx(2 * fraction / (1 + fraction))
    assert background.auc == foreground.auc == 0.5
    assert background.vessel_fraction == pytest.approx(fraction)


def test_aggregate_refuses_mixed_levels_and_empty_input(images):
    prob, truth, fov = images[1]
    with pytest.raises(DataError):
        aggregate([evaluate_image(prob, truth, fov), evaluate_image(prob, truth, fov, level=10)])
    with pytest.raises(DataError):
        aggregate([])


def test_micro_cldice_pools_skeleton_counts(images, results):
    pred_skeleton = pred_in_truth = truth_skeleton = truth_in_pred = 0
    for prob, truth, fov in images:
        pred, truth = prob.mask_at(level(0.5)) & fov, truth & fov
        s_pred, s_truth = skeletonize(pred), skeletonize(truth)
        pred_skeleton += s_pred.sum()
        pred_in_truth += (s_pred & truth).sum()
        truth_skeleton += s_truth.sum()
        truth_in_pred += (s_truth & pred).sum()
    tprec, tsens = pred_in_truth / pred_skeleton, truth_in_pred / truth_skeleton
    micro = aggregate(results, n_boot=10)["micro"]["cldice"]
    assert micro == pytest.approx(2 * tprec * tsens / (tprec + tsens), abs=1e-12)

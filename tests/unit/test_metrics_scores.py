"""Levels, histograms, confusion counts and scores against scikit-learn on the same FOV pixels."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

from vesselseg.errors import DataError
from vesselseg.metrics import (
    SCORE_NAMES,
    ProbabilityMap,
    confusion,
    constant_prediction_counts,
    evaluate_image,
    image_counts,
    level,
    pool,
    score_arrays,
    scores,
    threshold_of,
)


def random_case(seed: int, shape=(37, 41), vessel=0.2, with_fov=True):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape) < vessel
    # Probabilities correlated with the truth so that thresholds matter, with plenty of ties.
    prob = ProbabilityMap(np.clip(rng.normal(60 + 120 * truth, 50), 0, 255).astype(np.uint8), f"case {seed}")
    fov = rng.random(shape) < 0.8 if with_fov else None
    return prob, truth, fov


def sklearn_scores(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "dice": f1_score(truth, pred, zero_division=0),
        "iou": jaccard_score(truth, pred, zero_division=0),
        "precision": precision_score(truth, pred, zero_division=0),
        "recall": recall_score(truth, pred, zero_division=0),
        "specificity": recall_score(~truth, ~pred, zero_division=0),
        "accuracy": accuracy_score(truth, pred),
        "balanced_accuracy": balanced_accuracy_score(truth, pred),
        "mcc": matthews_corrcoef(truth, pred),
    }


def test_level_rule():
    assert level(0.5) == 128
    assert level(0.0) == 0 and level(1.0) == 255
    assert [level(k / 255) for k in range(256)] == list(range(256))
    assert threshold_of(128) == 128 / 255
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError):
            level(bad)


def test_threshold_half_splits_127_from_128():
    prob = ProbabilityMap(np.array([[127, 128]], dtype=np.uint8), "pair")
    truth = np.array([[False, True]])
    result = evaluate_image(prob, truth, threshold=0.5)
    assert (result.tp, result.fp, result.fn, result.tn) == (1, 0, 0, 1)
    assert evaluate_image(prob, truth, level=129).tp == 0
    assert evaluate_image(prob, truth, level=256).scores["recall"] == 0.0  # nothing predicted
    assert evaluate_image(prob, truth, level=0).scores["specificity"] == 0.0  # everything predicted
    with pytest.raises(ValueError):
        evaluate_image(prob, truth, threshold=0.5, level=128)
    with pytest.raises(ValueError):
        evaluate_image(prob, truth, level=0.5)


@pytest.mark.parametrize("with_fov", [True, False])
def test_histograms_match_masked_counting(with_fov):
    prob, truth, fov = random_case(1, with_fov=with_fov)
    counts = image_counts(prob, truth, fov)
    inside = np.ones_like(truth) if fov is None else fov
    expected_pos, _ = np.histogram(prob.levels[inside & truth], bins=256, range=(0, 256))
    expected_neg, _ = np.histogram(prob.levels[inside & ~truth], bins=256, range=(0, 256))
    np.testing.assert_array_equal(counts.pos_hist, expected_pos)
    np.testing.assert_array_equal(counts.neg_hist, expected_neg)
    assert counts.fov_used is with_fov


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decision_level", [0, 1, 100, 128, 200, 255, 256])
def test_confusion_matches_sklearn(seed, decision_level):
    prob, truth, fov = random_case(seed)
    tp, fp, fn, tn = confusion(image_counts(prob, truth, fov), decision_level)
    pred = prob.mask_at(decision_level)[fov]
    (sk_tn, sk_fp), (sk_fn, sk_tp) = confusion_matrix(truth[fov], pred, labels=[False, True])
    assert (tp, fp, fn, tn) == (sk_tp, sk_fp, sk_fn, sk_tn)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_scores_match_sklearn(seed, threshold):
    prob, truth, fov = random_case(seed, vessel=0.05 + 0.1 * seed)
    result = evaluate_image(prob, truth, fov, threshold=threshold)
    expected = sklearn_scores(truth[fov], prob.mask_at(level(threshold))[fov])
    for name in SCORE_NAMES:
        assert result.scores[name] == pytest.approx(expected[name], abs=1e-12), name


def test_hand_made_masks():
    truth = np.zeros((6, 6), bool)
    truth[1:4, 2] = True  # three vessel pixels
    pred = np.zeros_like(truth)
    pred[2:5, 2] = True  # two of them found, one false positive
    result = evaluate_image(ProbabilityMap(pred.astype(np.uint8) * 255, "hand"), truth)
    assert (result.tp, result.fp, result.fn, result.tn) == (2, 1, 1, 32)
    assert result.scores["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert result.scores["iou"] == pytest.approx(2 / 4)
    assert result.scores["specificity"] == pytest.approx(32 / 33)
    expected = sklearn_scores(truth.ravel(), pred.ravel())
    for name in SCORE_NAMES:
        assert result.scores[name] == pytest.approx(expected[name], abs=1e-12), name


@pytest.mark.filterwarnings("ignore:A single label")
def test_both_empty_is_perfect():
    got = scores(tp=0, fp=0, fn=0, tn=50)
    for name in ("dice", "iou", "precision", "recall", "specificity", "accuracy", "balanced_accuracy"):
        assert got[name] == 1.0, name
    assert got["mcc"] == matthews_corrcoef(np.zeros(50, bool), np.zeros(50, bool)) == 0.0
    truth = np.zeros(50, bool)
    assert got["dice"] == f1_score(truth, truth, zero_division=1.0)
    assert got["iou"] == jaccard_score(truth, truth, zero_division=1.0)


def test_empty_truth_with_prediction_scores_zero():
    got = scores(tp=0, fp=5, fn=0, tn=45)
    assert got["dice"] == got["iou"] == got["precision"] == got["recall"] == 0.0
    assert got["specificity"] == 45 / 50
    assert got["balanced_accuracy"] == pytest.approx((0 + 45 / 50) / 2)
    assert got["mcc"] == 0.0


def test_empty_prediction_on_vessels_scores_zero():
    got = scores(tp=0, fp=0, fn=5, tn=45)
    assert got["dice"] == got["iou"] == got["precision"] == got["recall"] == 0.0
    assert got["specificity"] == 1.0 and got["accuracy"] == 45 / 50
    assert got["mcc"] == 0.0


def test_all_one_prediction_matches_sklearn():
    prob, truth, fov = random_case(7)
    counts = constant_prediction_counts(truth, fov, 255)
    got = scores(*confusion(counts, level(0.5)))
    expected = sklearn_scores(truth[fov], np.ones(int(fov.sum()), bool))
    for name in SCORE_NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
    assert got["recall"] == 1.0 and got["specificity"] == 0.0
    assert got["accuracy"] == pytest.approx(truth[fov].mean())


def test_all_vessel_truth_specificity_convention():
    assert scores(tp=10, fp=0, fn=0, tn=0)["specificity"] == 1.0
    assert scores(tp=8, fp=0, fn=2, tn=0)["specificity"] == 0.0


def test_score_arrays_broadcast_like_scalar_scores():
    tp, fp, fn, tn = np.array([0, 3, 0]), np.array([0, 1, 4]), np.array([0, 2, 0]), np.array([9, 5, 5])
    arrays = score_arrays(tp, fp, fn, tn)
    for i in range(3):
        single = scores(int(tp[i]), int(fp[i]), int(fn[i]), int(tn[i]))
        for name in SCORE_NAMES:
            assert arrays[name][i] == single[name]


def test_pixels_outside_fov_do_not_matter():
    prob, truth, fov = random_case(3)
    rng = np.random.default_rng(99)
    other_prob = ProbabilityMap(np.where(fov, prob.levels, rng.integers(0, 256, prob.shape)).astype(np.uint8), "other")
    other_truth = np.where(fov, truth, rng.random(truth.shape) < 0.5)
    a = evaluate_image(prob, truth, fov).row()
    b = evaluate_image(other_prob, other_truth, fov).row()
    assert a == b
    assert evaluate_image(other_prob, other_truth, None).row() != a


def test_pool_adds_histograms():
    cases = [random_case(s) for s in range(3)]
    pooled = pool(image_counts(*c) for c in cases)
    prob = np.concatenate([p.levels[f] for p, _, f in cases])
    truth = np.concatenate([t[f] for _, t, f in cases])
    np.testing.assert_array_equal(pooled.pos_hist, np.bincount(prob[truth], minlength=256))
    assert pooled.n_pixels == prob.size


def test_invalid_inputs_are_refused():
    prob, truth, fov = random_case(0)
    with pytest.raises(DataError, match="bool"):
        image_counts(prob, truth.astype(np.uint8), fov)
    with pytest.raises(DataError, match="shape"):
        image_counts(prob, truth[:-1], fov)
    with pytest.raises(DataError, match="empty"):
        image_counts(prob, truth, np.zeros_like(fov))

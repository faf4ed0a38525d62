"""clDice against an independent skeleton computation; Betti numbers on shapes with known topology."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import disk, line, polygon_perimeter
from skimage.measure import euler_number, label
from skimage.morphology import skeletonize

from vesselseg.metrics import ProbabilityMap, betti_numbers, centerline_counts, cldice, evaluate_image, topology


def reference_cldice(pred: np.ndarray, truth: np.ndarray, fov: np.ndarray) -> float:
    """clDice as written in Shit et al. 2021, on the full image, both masks cut to the FOV first."""
    pred, truth = pred & fov, truth & fov
    s_pred, s_truth = skeletonize(pred), skeletonize(truth)
    tprec = (s_pred & truth).sum() / s_pred.sum()
    tsens = (s_truth & pred).sum() / s_truth.sum()
    return 2 * tprec * tsens / (tprec + tsens)


def reference_betti(mask: np.ndarray) -> tuple[int, int]:
    """Components by 8-connected labelling, holes by labelling the padded background 4-connected."""
    b0 = int(label(mask, connectivity=2).max())
    background = label(~np.pad(mask, 1), connectivity=1)
    return b0, int(background.max()) - 1


def vessel_tree(seed: int, shape=(96, 90)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    for _ in range(8):
        r0, r1 = rng.integers(0, shape[0], 2)
        c0, c1 = rng.integers(0, shape[1], 2)
        mask[line(r0, c0, r1, c1)] = True
    return ndimage.binary_dilation(mask, iterations=int(rng.integers(0, 3)))


@pytest.mark.parametrize("seed", range(6))
def test_cldice_matches_reference_inside_fov(seed):
    rng = np.random.default_rng(seed)
    truth = vessel_tree(seed)
    pred = ndimage.binary_dilation(truth) ^ (rng.random(truth.shape) < 0.05)
    fov = np.zeros(truth.shape, bool)
    fov[disk((48, 45), 40)] = True
    prob = ProbabilityMap(pred.astype(np.uint8) * 255, f"tree {seed}")
    result = evaluate_image(prob, truth, fov)
    assert result.cldice == pytest.approx(reference_cldice(pred, truth, fov), abs=1e-12)
    whole = evaluate_image(prob, truth, None)
    assert whole.cldice == pytest.approx(reference_cldice(pred, truth, np.ones_like(fov)), abs=1e-12)


def test_cldice_hand_made_cases():
    truth = np.zeros((20, 30), bool)
    truth[8:13, 3:27] = True  # a thick horizontal vessel
    thin = np.zeros_like(truth)
    thin[10, 3:27] = True  # its centerline alone
    assert cldice(truth, truth) == 1.0
    assert cldice(thin, truth) > 0.9  # centerline found: clDice high ...
    dice = 2 * (thin & truth).sum() / (thin.sum() + truth.sum())
    assert dice < 0.4  # ... where Dice punishes the missing width
    elsewhere = np.zeros_like(truth)
    elsewhere[1:3, 3:27] = True
    assert cldice(elsewhere, truth) == 0.0


def test_cldice_empty_masks():
    empty = np.zeros((10, 10), bool)
    some = empty.copy()
    some[4, 2:8] = True
    assert cldice(empty, empty) == 1.0
    assert cldice(some, empty) == 0.0
    assert cldice(empty, some) == 0.0


def test_centerline_counts_add_up():
    a, b = vessel_tree(1), vessel_tree(2)
    total = centerline_counts(a, b) + centerline_counts(b, a)
    s_a, s_b = skeletonize(a), skeletonize(b)
    assert total.pred_skeleton == s_a.sum() + s_b.sum()
    assert total.pred_skeleton_in_truth == (s_a & b).sum() + (s_b & a).sum()


def ring(shape, center, outer, inner) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(center, outer, shape=shape)] = True
    mask[disk(center, inner, shape=shape)] = False
    return mask


def square_outline(shape, top, left, size) -> np.ndarray:
    mask = np.zeros(shape, bool)
    rows = [top, top, top + size, top + size]
    cols = [left, left + size, left + size, left]
    mask[polygon_perimeter(rows, cols, shape=shape)] = True
    return mask


def test_betti_of_known_shapes():
    shape = (40, 60)
    filled = np.zeros(shape, bool)
    filled[disk((20, 20), 8)] = True
    one_ring = ring(shape, (20, 20), 8, 5)
    two_rings = one_ring | ring(shape, (20, 45), 8, 4)

    corner_cut = square_outline(shape, 5, 5, 20)
    corner_cut[5, 5] = False  # the neighbours of a cut corner still touch diagonally

    broken = square_outline(shape, 5, 5, 20)
    broken[5, 15] = False  # a real gap in a straight side opens the loop

    diamond = np.zeros(shape, bool)
    for (r0, c0), (r1, c1) in [((5, 20), (15, 30)), ((15, 30), (25, 20)), ((25, 20), (15, 10)), ((15, 10), (5, 20))]:
        diamond[line(r0, c0, r1, c1)] = True  # a loop of purely diagonal steps

    diagonal_pair = np.zeros(shape, bool)
    diagonal_pair[3, 3] = diagonal_pair[4, 4] = True

    u_at_border = np.zeros(shape, bool)
    u_at_border[0:10, 10] = u_at_border[0:10, 20] = u_at_border[10, 10:21] = True  # open to the edge

    expected = {
        "empty": (np.zeros(shape, bool), (0, 0)),
        "filled disc": (filled, (1, 0)),
        "ring": (one_ring, (1, 1)),
        "two rings": (two_rings, (2, 2)),
        "ring with diagonal gap": (corner_cut, (1, 1)),
        "broken ring": (broken, (1, 0)),
        "diagonal diamond": (diamond, (1, 1)),
        "diagonal pair": (diagonal_pair, (1, 0)),
        "u open to the border": (u_at_border, (1, 0)),
        "ring touching the border": (ring(shape, (0, 30), 8, 4) | ring(shape, (30, 30), 12, 6), (2, 1)),
    }
    for name, (mask, betti) in expected.items():
        got = betti_numbers(mask)
        assert (got.b0, got.b1) == betti, name
        assert reference_betti(mask) == betti, name


@pytest.mark.parametrize("seed", range(8))
def test_betti_matches_labelling_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((50, 70)) < 0.35 + 0.05 * seed
    got = betti_numbers(mask)
    assert (got.b0, got.b1) == reference_betti(mask)
    assert got.b0 - got.b1 == euler_number(mask, connectivity=2)


def test_betti_errors_in_image_result():
    shape = (40, 60)
    truth = ring(shape, (20, 20), 8, 5) | ring(shape, (20, 45), 8, 4)
    pred = np.zeros(shape, bool)
    pred[disk((20, 20), 8)] = True  # one filled disc: one component, no hole
    result = evaluate_image(ProbabilityMap(pred.astype(np.uint8) * 255, "disc"), truth)
    assert (result.topology.betti_truth.b0, result.topology.betti_truth.b1) == (2, 2)
    assert (result.betti0_error, result.betti1_error) == (1, 2)


def test_parallel_and_single_thread_topology_agree():
    truth = vessel_tree(5)
    pred = vessel_tree(6) | truth
    assert topology(pred, truth, parallel=True) == topology(pred, truth, parallel=False)

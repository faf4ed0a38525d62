"""The synthetic fundus generator: deterministic, and its masks are the pixels it darkened."""

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage
from skimage.morphology import skeletonize

from vesselseg.data import SyntheticConfig, generate_fundus


@pytest.fixture(scope="module")
def fundus_512():
    return [generate_fundus(512, seed) for seed in range(3)]


def test_same_seed_gives_identical_bytes():
    a, b = generate_fundus(96, seed=7, index=3), generate_fundus(96, seed=7, index=3)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()
    assert a.fov.tobytes() == b.fov.tobytes()


def test_different_seed_or_index_gives_a_different_image():
    base = generate_fundus(96, seed=7, index=3)
    for other in (generate_fundus(96, seed=8, index=3), generate_fundus(96, seed=7, index=4)):
        assert not np.array_equal(base.image, other.image)
        assert not np.array_equal(base.mask, other.mask)


def test_shapes_and_types():
    f = generate_fundus(80, seed=0)
    assert f.image.shape == (80, 80, 3) and f.image.dtype == np.uint8
    assert f.mask.shape == f.fov.shape == (80, 80)
    assert f.mask.dtype == f.fov.dtype == np.bool_


def test_mask_inside_circular_fov_and_black_outside(fundus_512):
    for f in fundus_512:
        assert f.mask.any()
        assert not (f.mask & ~f.fov).any()
        assert (f.image[~f.fov] == 0).all()
        # The FOV is a disk: filled, one piece, and it covers most of the square (pi/4 at most).
        labels, count = ndimage.label(f.fov)
        assert count == 1 and 0.6 < f.fov.mean() < np.pi / 4


def test_image_is_darker_on_mask_pixels_than_just_beside_them(fundus_512):
    for f in fundus_512:
        green = f.image[..., 1].astype(float)
        inside = ndimage.binary_erosion(f.fov, iterations=6)
        near = ndimage.binary_dilation(f.mask, iterations=4) & ~ndimage.binary_dilation(f.mask, iterations=2)
        thin = (
            f.mask
            & (ndimage.distance_transform_edt(f.mask) <= 1)
            & ~ndimage.binary_dilation(f.mask & (ndimage.distance_transform_edt(f.mask) > 1), iterations=3)
        )
        assert green[f.mask & inside].mean() < 0.8 * green[near & inside].mean()
        # Even 1-2 px vessels, far from thick ones, are visibly darker than their surroundings.
        assert green[thin & inside].mean() < 0.93 * green[near & inside].mean()


def test_vessel_fraction_inside_fov_is_realistic(fundus_512):
    for f in fundus_512:
        assert 0.08 <= f.mask[f.fov].mean() <= 0.15


def test_widths_taper_from_about_8_px_to_1_px_with_many_thin_vessels(fundus_512):
    for f in fundus_512:
        skeleton = skeletonize(f.mask)
        half_width = ndimage.distance_transform_edt(f.mask)[skeleton]
        # On a skeleton pixel, distance 1 means a vessel 1-2 px wide; 4 means about 8 px wide. The top
        # percentile, not the maximum: where two trunks touch, the skeleton sees one wider vessel.
        assert 3.0 <= np.percentile(half_width, 99.5) <= 5.0
        assert (half_width <= 1.0).mean() >= 0.5
        assert (half_width <= 1.0).sum() >= 2000


def test_thin_vessels_survive_at_small_sizes():
    f = generate_fundus(128, seed=1)
    assert 0.03 <= f.mask[f.fov].mean() <= 0.15
    assert (ndimage.distance_transform_edt(f.mask)[skeletonize(f.mask)] <= 1.0).mean() >= 0.5


def test_config_is_validated():
    assert SyntheticConfig() == SyntheticConfig(count=30, size=512, seed=0)
    with pytest.raises(ValidationError):
        SyntheticConfig(count=0)
    with pytest.raises(ValidationError):
        SyntheticConfig(size=16)
    with pytest.raises(ValidationError):
        SyntheticConfig(colour="red")

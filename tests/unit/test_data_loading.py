"""Loading rules: explicit mask binarisation, RGB conversion, size checks, and bad files named in errors."""

import gzip
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from vesselseg.data import DataPrepConfig, RawSample, binarize_mask, derive_fov, load_sample, read_image, read_mask
from vesselseg.data.loading import ReadLimits
from vesselseg.data.synthetic import generate_fundus
from vesselseg.errors import DataError


def write(array, path: Path, fmt=None, mode=None) -> Path:
    img = Image.fromarray(array)
    img = img.convert(mode) if mode else img
    img.save(path, format=fmt)
    return path


def test_threshold_is_128_of_255(tmp_path):
    values = np.zeros((40, 40), np.uint8)
    values[0, :3] = (127, 128, 255)
    mask = read_mask(write(values, tmp_path / "m.png"))
    assert mask.dtype == np.bool_
    assert mask[0, :3].tolist() == [False, True, True]
    assert mask.sum() == 2


def test_zero_one_masks_are_read_as_labels(tmp_path):
    values = np.zeros((20, 20), np.uint8)
    values[5, 5:9] = 1
    mask = read_mask(write(values, tmp_path / "m.png"))
    assert mask.sum() == 4 and mask[5, 5:9].all()


def test_one_bit_and_palette_and_colour_masks(tmp_path):
    truth = np.zeros((30, 30), bool)
    truth[10:20, 3] = True
    grey = np.where(truth, 255, 0).astype(np.uint8)
    assert np.array_equal(read_mask(write(grey, tmp_path / "m1.png", mode="1")), truth)
    assert np.array_equal(read_mask(write(grey, tmp_path / "m.gif")), truth)
    red = np.zeros((30, 30, 3), np.uint8)
    red[truth] = (255, 0, 0)  # luminance 76: read as grey it would vanish
    assert np.array_equal(read_mask(write(red, tmp_path / "red.png")), truth)


def test_sixteen_bit_mask_and_image_are_scaled(tmp_path):
    values = np.zeros((20, 20), np.uint16)
    values[3, 3:6] = 65535
    path = tmp_path / "m16.png"
    Image.fromarray(values).save(path)
    assert read_mask(path).sum() == 3
    image = read_image(path)
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8 and image[3, 3].tolist() == [255, 255, 255]


def test_few_intermediate_values_pass_many_are_a_non_binary_mask(tmp_path):
    values = np.zeros((100, 100), np.uint8)
    values[:, :10] = 255
    values[90:, 20:35] = 100  # 1.5 % of the pixels: edge artefacts as in CHASE_DB1's labels
    assert read_mask(write(values, tmp_path / "ok.png")).sum() == 1000
    soft = np.tile(np.linspace(0, 255, 100).astype(np.uint8), (100, 1))
    with pytest.raises(DataError, match=r"non-binary mask .*soft\.png.*between 32 and 223"):
        read_mask(write(soft, tmp_path / "soft.png"))
    with pytest.raises(DataError, match="non-binary"):
        binarize_mask(np.full((10, 10), 128, np.uint8), "flat")


def test_images_become_rgb(tmp_path):
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    assert read_image(write(rgba, tmp_path / "a.png")).shape == (8, 9, 3)
    grey = np.full((8, 9), 77, np.uint8)
    out = read_image(write(grey, tmp_path / "g.png"))
    assert out.shape == (8, 9, 3) and (out == 77).all()
    palette = read_image(write(grey, tmp_path / "p.gif"))
    assert palette.shape == (8, 9, 3) and (palette == 77).all()


def test_gzipped_files_are_read(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PPM")
    path = tmp_path / "im0001.ppm.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    assert np.array_equal(read_image(path), rgb)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.png", b"this is not a picture"),
        ("truncated.png", "truncate"),
        ("broken.ppm.gz", b"\x1f\x8b\x08\x00 not really gzip"),
        ("empty.tif", b""),
    ],
)
def test_unreadable_file_is_an_error_naming_it(tmp_path, name, content):
    path = tmp_path / name
    if content == "truncate":
        write(generate_fundus(64, 0).image, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=rf"cannot read image .*{name}"):
        read_image(path)
    with pytest.raises(DataError, match=rf"cannot read mask .*{name}"):
        read_mask(path)


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"image .*nope\.png does not exist"):
        read_image(tmp_path / "nope.png")


def _sample(tmp_path, image_size=(64, 64), mask_size=(64, 64), fov_size=(64, 64), second_size=None, fov=True):
    f = generate_fundus(64, 3)

    def resized(array, size, name):
        return write(np.asarray(Image.fromarray(array).resize(size, Image.Resampling.NEAREST)), tmp_path / name)

    image = resized(f.image, image_size, "img.png")
    mask = resized(f.mask, mask_size, "mask.png")
    fov_path = resized(f.fov, fov_size, "fov.png") if fov else None
    second = resized(f.mask, second_size, "m2.png") if second_size else None
    return RawSample("s", image, mask, fov_path, second), f


def test_load_sample_checks_and_returns_arrays(tmp_path):
    raw, f = _sample(tmp_path)
    loaded = load_sample(raw, tmp_path)
    assert np.array_equal(loaded.image, f.image)
    assert np.array_equal(loaded.mask, f.mask) and np.array_equal(loaded.fov, f.fov)
    assert loaded.fov_source == "given" and loaded.source_mask == "mask.png"
    derived = load_sample(_sample(tmp_path, fov=False)[0], tmp_path)
    assert derived.fov_source == "derived" and derived.fov.any()


@pytest.mark.parametrize(
    ("sizes", "what", "other"),
    [
        ({"mask_size": (64, 60)}, "mask", "mask.png is 64x60"),
        ({"fov_size": (50, 64)}, "FOV mask", "fov.png is 50x64"),
        ({"second_size": (32, 32)}, "second annotator's mask", "m2.png is 32x32"),
    ],
)
def test_size_mismatch_names_both_files_and_sizes(tmp_path, sizes, what, other):
    raw, _ = _sample(tmp_path, **sizes)
    with pytest.raises(DataError, match=rf"size mismatch: image .*img\.png is 64x64 but {what} .*{other}"):
        load_sample(raw, tmp_path)


def test_empty_fov_mask_is_an_error(tmp_path):
    raw, _ = _sample(tmp_path)
    write(np.zeros((64, 64), np.uint8), raw.fov)
    with pytest.raises(DataError, match=r"FOV mask .*fov\.png is empty"):
        load_sample(raw, tmp_path)


def test_derived_fov_matches_the_true_circle_through_jpeg():
    for seed in range(3):
        f = generate_fundus(128, seed)
        buf = io.BytesIO()
        Image.fromarray(f.image).save(buf, format="JPEG", quality=85)
        derived = derive_fov(np.asarray(Image.open(buf)), "x.jpg")
        assert (derived & f.fov).sum() / (derived | f.fov).sum() > 0.97


def test_derived_fov_ignores_burnt_in_marks_touching_the_circle():
    f = generate_fundus(128, 0)
    image = f.image.copy()
    image[2:4, 2:64] = 255  # a thin caption line in the black corner...
    image[2:64, 62:64] = 255  # ...joined to the field of view
    derived = derive_fov(image, "x.jpg")
    assert not derived[2:4, 2:40].any()
    assert (derived & f.fov).sum() / (derived | f.fov).sum() > 0.97


def test_black_image_has_no_fov_to_derive():
    with pytest.raises(DataError, match=r"cannot derive a field of view for dark\.jpg"):
        derive_fov(np.zeros((64, 64, 3), np.uint8), "dark.jpg")


def test_a_144_megapixel_mask_is_refused_before_decoding(tmp_path):
    """Pillow's own check only warns between ~89 and ~179 megapixels; the explicit limit refuses it."""
    path = tmp_path / "huge.png"
    Image.new("1", (12_000, 12_000)).save(path)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DataError, match=r"huge\.png is too large.*144000000 pixels.*max_pixels=64,000,000"):
        read_mask(path)


def test_the_pixel_limit_is_configurable(tmp_path):
    path = write(np.zeros((40, 50), np.uint8), tmp_path / "m.png")
    assert read_mask(path, limits=ReadLimits(max_pixels=2000)).shape == (40, 50)
    with pytest.raises(DataError, match="above the limit of 1,999"):
        read_mask(path, limits=ReadLimits(max_pixels=1999))
    with pytest.raises(ValidationError, match="max_pixels"):
        ReadLimits(max_pixels=Image.MAX_IMAGE_PIXELS + 1)


def test_a_gz_bomb_is_refused_while_streaming_not_after_unpacking_it(tmp_path):
    """64 MiB of zeros in a small .gz: with a cap of 4 MiB, no more than about that is ever held in memory."""
    path = tmp_path / "im0001.ppm.gz"
    header = b"P5 8192 8192 255\n"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header)
        for _ in range(64):
            out.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"im0001\.ppm\.gz unpacks to more than 4 MiB.*max_decompressed_mib"):
            read_image(path, limits=ReadLimits(max_decompressed_mib=4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak / (1 << 20):.0f} MiB"


def test_data_prep_config_carries_the_limits(tmp_path):
    path = write(generate_fundus(64, seed=0, index=0).image, tmp_path / "i.png")
    config = DataPrepConfig.model_validate({"limits": {"max_pixels": 100}})
    with pytest.raises(DataError, match="max_pixels"):
        read_image(path, config.limits)

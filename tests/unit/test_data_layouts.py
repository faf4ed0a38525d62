"""Readers of the published dataset layouts, on small folders built here in each exact layout."""

import gzip
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vesselseg.data import (
    DataPrepConfig,
    PreparedDataset,
    detect_layout,
    load_sample,
    prepare_dataset,
    read_layout,
)
from vesselseg.data.synthetic import generate_fundus
from vesselseg.errors import DataError

SIZE = 64


def fundus(i):
    return generate_fundus(SIZE, seed=100, index=i)


def save(array, path: Path, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def grey(mask):
    return np.where(mask, 255, 0).astype(np.uint8)


def save_mask(mask, path: Path, fmt=None):
    save(grey(mask), path, fmt)


def save_ppm_gz(array, path: Path):
    """STARE ships gzip'd PPM files, labels as three identical channels."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PPM")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue()))


def build_drive(root: Path):
    for number, part in ((21, "training"), (22, "training"), (1, "test"), (2, "test")):
        f, n = fundus(number), f"{number:02d}"
        save(f.image, root / part / "images" / f"{n}_{part}.tif")
        save_mask(f.mask, root / part / "1st_manual" / f"{n}_manual1.gif")
        save_mask(f.fov, root / part / "mask" / f"{n}_{part}_mask.gif")
        if part == "test":
            save_mask(fundus(number + 50).mask, root / part / "2nd_manual" / f"{n}_manual2.gif")
    return root


def build_chase(root: Path):
    for i, name in enumerate(("Image_01L", "Image_01R", "Image_02L")):
        f = fundus(i)
        save(f.image, root / f"{name}.jpg")
        # CHASE_DB1's labels are not strictly 0/255: a few off values on both sides of the threshold.
        label = np.where(f.mask, 251, 3).astype(np.uint8)
        label.flat[::97] = 140
        save(label, root / f"{name}_1stHO.png")
        save_mask(fundus(i + 50).mask, root / f"{name}_2ndHO.png")
    return root


def build_stare(root: Path):
    for i in range(1, 5):
        f = fundus(i)
        save_ppm_gz(f.image, root / "stare-images" / f"im{i:04d}.ppm.gz")
        if i < 4:  # im0004 is one of the archive's many photographs without vessel labels
            save_ppm_gz(grey(f.mask), root / "labels-ah" / f"im{i:04d}.ah.ppm.gz")
            save_ppm_gz(grey(fundus(i + 50).mask), root / "labels-vk" / f"im{i:04d}.vk.ppm.gz")
    return root


def build_hrf(root: Path):
    for i, (name, ext) in enumerate((("01_h", "jpg"), ("01_g", "JPG"), ("02_dr", "jpg"))):
        f = fundus(i)
        save(f.image, root / "images" / f"{name}.{ext}", "JPEG")
        save_mask(f.mask, root / "manual1" / f"{name}.tif")
        save(np.repeat(grey(f.fov)[..., None], 3, axis=2), root / "mask" / f"{name}_mask.tif")  # an RGB FOV
    return root


def build_generic(root: Path, fov=True):
    for i, (name, ext) in enumerate((("a", "png"), ("b", "bmp"), ("c", "jpg"), ("d", "tif"))):
        f = fundus(i)
        save(f.image, root / "images" / f"{name}.{ext}")
        save_mask(f.mask, root / "masks" / f"{name}.{'png' if i % 2 else 'gif'}")
        if fov:
            save_mask(f.fov, root / "fov" / f"{name}.png")
    return root


def test_drive_reader_pairs_files_and_keeps_the_official_split(tmp_path):
    root = build_drive(tmp_path / "DRIVE")
    assert detect_layout(root) == "drive"
    samples = read_layout(root)
    assert [s.sample_id for s in samples] == ["01_test", "02_test", "21_training", "22_training"]
    by_id = {s.sample_id: s for s in samples}
    assert by_id["21_training"].official_split == "train" and by_id["01_test"].official_split == "test"
    assert by_id["21_training"].mask == root / "training" / "1st_manual" / "21_manual1.gif"
    assert by_id["21_training"].fov == root / "training" / "mask" / "21_training_mask.gif"
    assert by_id["21_training"].mask_2nd is None
    assert by_id["01_test"].mask_2nd == root / "test" / "2nd_manual" / "01_manual2.gif"

    loaded = load_sample(by_id["01_test"], root)
    assert np.array_equal(loaded.mask, fundus(1).mask)
    assert np.array_equal(loaded.fov, fundus(1).fov)
    assert np.array_equal(loaded.mask_2nd, fundus(51).mask)
    assert np.array_equal(loaded.image, fundus(1).image)  # TIFF is lossless
    assert loaded.fov_source == "given" and loaded.source_image == "test/images/01_test.tif"


def test_chase_reader_derives_the_fov_and_reads_noisy_labels(tmp_path):
    root = build_chase(tmp_path / "CHASEDB1")
    assert detect_layout(root) == "chase_db1"
    samples = read_layout(root)
    assert [s.sample_id for s in samples] == ["Image_01L", "Image_01R", "Image_02L"]
    assert all(s.fov is None and s.official_split is None for s in samples)
    assert samples[0].mask_2nd == root / "Image_01L_2ndHO.png"

    loaded = load_sample(samples[0], root)
    expected = fundus(0).mask.copy()
    expected.flat[::97] = True  # 140 >= 128
    assert np.array_equal(loaded.mask, expected)
    assert loaded.fov_source == "derived"
    iou = (loaded.fov & fundus(0).fov).sum() / (loaded.fov | fundus(0).fov).sum()
    assert iou > 0.95


def test_stare_reader_reads_gzipped_ppm_and_skips_unlabelled_photographs(tmp_path):
    root = build_stare(tmp_path / "STARE")
    assert detect_layout(root) == "stare"
    samples = read_layout(root)
    assert [s.sample_id for s in samples] == ["im0001", "im0002", "im0003"]
    assert samples[0].mask_2nd == root / "labels-vk" / "im0001.vk.ppm.gz"
    loaded = load_sample(samples[1], root)
    assert np.array_equal(loaded.image, fundus(2).image)
    assert np.array_equal(loaded.mask, fundus(2).mask)
    assert np.array_equal(loaded.mask_2nd, fundus(52).mask)
    assert loaded.fov_source == "derived"


def test_stare_label_without_photograph_is_an_error(tmp_path):
    root = build_stare(tmp_path / "STARE")
    (root / "stare-images" / "im0002.ppm.gz").unlink()
    with pytest.raises(DataError, match=r"im0002\.ah\.ppm\.gz has no photograph"):
        read_layout(root)


def test_hrf_reader_accepts_jpg_and_JPG(tmp_path):
    root = build_hrf(tmp_path / "HRF")
    assert detect_layout(root) == "hrf"
    samples = read_layout(root)
    assert [s.sample_id for s in samples] == ["01_g", "01_h", "02_dr"]
    assert samples[0].image.name == "01_g.JPG"
    assert samples[0].fov == root / "mask" / "01_g_mask.tif"
    loaded = load_sample(samples[1], root)
    assert np.array_equal(loaded.mask, fundus(0).mask)
    assert np.array_equal(loaded.fov, fundus(0).fov)


def test_generic_reader_matches_by_stem_across_formats(tmp_path):
    root = build_generic(tmp_path / "mine")
    (root / "images" / "notes.txt").write_text("not an image")
    (root / "images" / ".DS_Store").write_bytes(b"\0")
    assert detect_layout(root) == "generic"
    samples = read_layout(root)
    assert [s.sample_id for s in samples] == ["a", "b", "c", "d"]
    assert samples[0].mask.name == "a.gif" and samples[1].mask.name == "b.png"
    assert samples[2].fov == root / "fov" / "c.png"
    for i, sample in enumerate(samples):
        assert np.array_equal(load_sample(sample, root).mask, fundus(i).mask)


def test_generic_without_fov_folder_derives_fov(tmp_path):
    samples = read_layout(build_generic(tmp_path / "mine", fov=False), "generic")
    assert all(s.fov is None for s in samples)


@pytest.mark.parametrize(
    ("build", "remove", "image_name"),
    [
        (build_generic, "masks/b.png", "b.bmp"),
        (build_drive, "training/1st_manual/22_manual1.gif", "22_training.tif"),
        (build_chase, "Image_01R_1stHO.png", "Image_01R.jpg"),
        (build_hrf, "manual1/02_dr.tif", "02_dr.jpg"),
    ],
)
def test_image_without_mask_is_an_error_naming_the_image(tmp_path, build, remove, image_name):
    root = build(tmp_path / "data")
    (root / remove).unlink()
    with pytest.raises(DataError, match=rf"image .*{image_name} has no .*mask"):
        read_layout(root)


def test_missing_fov_where_the_layout_has_a_fov_folder_is_an_error(tmp_path):
    root = build_generic(tmp_path / "mine")
    (root / "fov" / "c.png").unlink()
    with pytest.raises(DataError, match=r"c\.jpg has no FOV mask"):
        read_layout(root)


def test_two_images_with_one_stem_are_an_error(tmp_path):
    root = build_generic(tmp_path / "mine")
    shutil.copy(root / "images" / "a.png", root / "images" / "a.jpg")
    with pytest.raises(DataError, match=r"a\.jpg.*a\.png|a\.png.*a\.jpg"):
        read_layout(root)


def test_unknown_layout_names_the_folder_and_what_was_looked_for(tmp_path):
    root = tmp_path / "photos"
    save(fundus(0).image, root / "holiday.png")
    with pytest.raises(DataError, match=r"photos.*looked for.*DRIVE.*generic"):
        detect_layout(root)


def test_empty_or_missing_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        read_layout(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_layout(tmp_path / "nowhere")


def test_layout_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "mine" / "images").mkdir(parents=True)
    (tmp_path / "mine" / "masks").mkdir()
    with pytest.raises(DataError, match=r"no images found in .*mine/images"):
        read_layout(tmp_path / "mine")


def test_prepare_drive_keeps_official_split_and_second_annotator(tmp_path):
    root = build_drive(tmp_path / "DRIVE")
    cfg = DataPrepConfig(source=str(root))
    summary = prepare_dataset(cfg, tmp_path / "out")
    assert summary.layout == "drive"
    assert {s: st.n_images for s, st in summary.splits.items()} == {"train": 1, "val": 1, "test": 2}
    ds = PreparedDataset(tmp_path / "out")
    assert ds.ids("test") == ["01_test", "02_test"]
    assert np.array_equal(ds.mask_2nd("02_test"), fundus(52).mask)
    assert ds.mask_2nd("21_training") is None
    # The test split's second annotator is test ground truth: it lives with the test labels.
    assert sorted(p.name for p in (tmp_path / "out" / "test_labels" / "masks_2nd").iterdir()) == [
        "01_test.png",
        "02_test.png",
    ]
    assert ds.stats["test"]["fov_source"] == "given"

    # The fingerprint hashes contents, not where the folder happens to be.
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "DRIVE")
    again = prepare_dataset(DataPrepConfig(source=str(moved)), tmp_path / "out2")
    assert again.fingerprint == summary.fingerprint


def test_prepare_drive_refuses_the_same_photograph_in_train_and_test(tmp_path):
    root = build_drive(tmp_path / "DRIVE")
    shutil.copy(root / "training" / "images" / "21_training.tif", root / "test" / "images" / "02_test.tif")
    with pytest.raises(DataError, match="leakage") as error:
        prepare_dataset(DataPrepConfig(source=str(root)), tmp_path / "out")
    assert "test/images/02_test.tif (test)" in str(error.value)
    assert "training/images/21_training.tif (" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_file_name_that_is_not_utf8_is_a_data_error_naming_it(tmp_path):
    root = build_generic(tmp_path / "data")
    for sub in ("images", "masks", "fov"):
        folder = root / sub
        original = next(p for p in folder.iterdir() if p.stem == "b")
        os.rename(bytes(original), bytes(folder) + b"/b\xff" + original.suffix.encode())
    with pytest.raises(DataError, match=r"b\\xff.* is not valid UTF-8"):
        prepare_dataset(DataPrepConfig(source=str(root)), tmp_path / "out")
    assert not (tmp_path / "out").exists()

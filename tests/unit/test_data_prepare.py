"""prepare_dataset end to end on synthetic data and on a generic folder, and PreparedDataset reading it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from vesselseg.data import (
    DataPrepConfig,
    PreparedDataset,
    SplitConfig,
    SyntheticConfig,
    assign_splits,
    decode_rle,
    encode_rle,
    generate_fundus,
    prepare_dataset,
)
from vesselseg.errors import DataError

SYNTH = SyntheticConfig(count=6, size=64, seed=3)


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "dataset"
    summary = prepare_dataset(DataPrepConfig(synthetic=SYNTH), out)
    return out, summary


def build_generic(root: Path, n=5, fov=True):
    for i in range(n):
        f = generate_fundus(64, seed=9, index=i)
        for folder, array in (("images", f.image), ("masks", f.mask), ("fov", f.fov)):
            if folder == "fov" and not fov:
                continue
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / folder / f"eye{i}.png")
    return root


def test_synthetic_dataset_files(synthetic_dataset):
    out, summary = synthetic_dataset
    assert sorted(p.name for p in out.iterdir()) == [
        "annotations", "fingerprint.json", "fov", "images", "index.parquet", "masks", "stats.json", "test_labels",
    ]  # fmt: skip
    assert sorted(p.name for p in (out / "annotations").iterdir()) == ["train.json", "val.json"]
    assert sorted(p.relative_to(out / "test_labels").as_posix() for p in (out / "test_labels").rglob("*.*")) == [
        "annotations/test.json", "fingerprint.json", "labels.parquet", "masks/synthetic_0001.png", "stats.json",
    ]  # fmt: skip
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    index = PreparedDataset(out).index
    assert len(index) == summary.n_images == 6
    assert index["split"].value_counts().to_dict() == {"train": 4, "val": 1, "test": 1}
    for i, row in enumerate(index.itertuples()):
        f = generate_fundus(64, 3, i)
        assert row.sample_id == f"synthetic_{i:04d}"
        assert row.source_image == row.source_mask == f"synthetic:3:{i}"
        assert (row.height, row.width) == (64, 64)
        assert row.mask_2nd is None and not row.fov_derived and row.fov_source == "synthetic"
        with Image.open(out / row.image) as img:
            assert img.mode == "RGB" and np.array_equal(np.asarray(img), f.image)
        with Image.open(out / row.mask) as img:
            assert img.mode == "L" and set(np.unique(np.asarray(img))) <= {0, 255}
            assert np.array_equal(np.asarray(img) == 255, f.mask)
        with Image.open(out / row.fov) as img:
            assert np.array_equal(np.asarray(img) == 255, f.fov)
        assert row.vessel_fraction_fov == pytest.approx(f.mask[f.fov].mean())


def test_nothing_outside_test_labels_derives_from_the_test_ground_truth(synthetic_dataset, tmp_path):
    """The dataset without its test_labels/ folder (what every non-scoring task is given) holds no test mask,
    no number computed from one, and refuses to produce one."""
    out, _ = synthetic_dataset
    public = tmp_path / "public"
    shutil.copytree(out, public, ignore=shutil.ignore_patterns("test_labels"))
    test_id = "synthetic_0001"
    truth = generate_fundus(64, 3, 1)
    index = pd.read_parquet(public / "index.parquet")
    row = index.set_index("sample_id").loc[test_id]
    assert row["split"] == "test"
    assert all(pd.isna(row[c]) for c in ("mask", "mask_2nd", "mask_sha256", "mask_2nd_sha256", "vessel_fraction_fov"))
    stats = json.loads((public / "stats.json").read_text())["test"]
    assert stats["n_images"] == 1 and stats["vessel_fraction_fov"] is None is stats["all_background_accuracy_fov"]
    rle = encode_rle(truth.mask)["counts"].encode()
    for path in public.rglob("*"):
        if path.is_file():
            assert rle not in path.read_bytes(), f"{path} holds the test mask's encoding"
            if path.suffix == ".png":
                with Image.open(path) as img:
                    pixels = np.asarray(img.convert("L")) >= 128
                assert not np.array_equal(pixels, truth.mask), f"{path} is the test mask"
    ds = PreparedDataset(public)
    assert not ds.has_test_labels
    with pytest.raises(DataError, match=r"no ground truth for 'synthetic_0001'.*own artifact"):
        ds.mask(test_id)
    with pytest.raises(DataError, match=r"no ground truth for 'synthetic_0001'"):
        ds.mask_2nd(test_id)
    assert np.array_equal(ds.image(test_id), truth.image) and np.array_equal(ds.fov(test_id), truth.fov)


def test_test_labels_of_another_dataset_are_refused(synthetic_dataset, tmp_path):
    out, _ = synthetic_dataset
    other = tmp_path / "other"
    prepare_dataset(DataPrepConfig(synthetic=SYNTH.model_copy(update={"seed": 4})), other)
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed, ignore=shutil.ignore_patterns("test_labels"))
    shutil.copytree(other / "test_labels", mixed / "test_labels")
    with pytest.raises(DataError, match=r"test labels in .* belong to dataset"):
        PreparedDataset(mixed)


def test_synthetic_annotations_decode_to_the_written_masks(synthetic_dataset):
    out, _ = synthetic_dataset
    ds = PreparedDataset(out)
    for split in ("train", "val", "test"):
        folder = out / "test_labels" if split == "test" else out
        entries = json.loads((folder / "annotations" / f"{split}.json").read_text())
        assert [e["image"] for e in entries] == [f"images/{sid}.png" for sid in ds.ids(split)]
        for entry, sid in zip(entries, ds.ids(split), strict=True):
            assert entry["text"] == ["blood vessels"]
            assert np.array_equal(decode_rle(entry["mask"][0]), ds.mask(sid))


def test_stats_are_pooled_over_each_split(synthetic_dataset):
    out, summary = synthetic_dataset
    stats = json.loads((out / "stats.json").read_text())
    stats.update(json.loads((out / "test_labels" / "stats.json").read_text()))
    ds = PreparedDataset(out)
    assert ds.stats == stats
    for split in ("train", "val", "test"):
        vessel = sum(int((ds.mask(s) & ds.fov(s)).sum()) for s in ds.ids(split))
        fov = sum(int(ds.fov(s).sum()) for s in ds.ids(split))
        assert stats[split]["n_images"] == len(ds.ids(split))
        assert stats[split]["vessel_fraction_fov"] == pytest.approx(vessel / fov)
        assert stats[split]["all_background_accuracy_fov"] == pytest.approx(1 - vessel / fov)
        assert stats[split]["fov_source"] == "synthetic"
        full = summary.test_labels if split == "test" else summary.splits[split]
        assert full.vessel_fraction_fov == pytest.approx(vessel / fov)


def test_fingerprint_is_reproducible_and_tracks_data_and_config(synthetic_dataset, tmp_path):
    out, summary = synthetic_dataset
    record = json.loads((out / "fingerprint.json").read_text())
    assert record["fingerprint"] == summary.fingerprint == PreparedDataset(out).fingerprint
    assert record["n_images"] == 6 and record["config"]["synthetic"] == SYNTH.model_dump()
    again = prepare_dataset(DataPrepConfig(synthetic=SYNTH), tmp_path / "again")
    assert again.fingerprint == summary.fingerprint
    other_seed = prepare_dataset(DataPrepConfig(synthetic=SYNTH.model_copy(update={"seed": 4})), tmp_path / "s4")
    other_split = prepare_dataset(DataPrepConfig(synthetic=SYNTH, split=SplitConfig(seed=1)), tmp_path / "sp1")
    other_text = prepare_dataset(DataPrepConfig(synthetic=SYNTH, referring_text="vessels"), tmp_path / "txt")
    assert len({summary.fingerprint, other_seed.fingerprint, other_split.fingerprint, other_text.fingerprint}) == 4


def test_generic_folder_end_to_end(tmp_path):
    source = build_generic(tmp_path / "mine")
    summary = prepare_dataset(DataPrepConfig(source=str(source)), tmp_path / "out")
    assert summary.layout == "generic" and summary.n_images == 5
    ds = PreparedDataset(tmp_path / "out")
    assert ds.ids() == [f"eye{i}" for i in range(5)]
    row = ds.index.set_index("sample_id").loc["eye2"]
    assert row["source_image"] == "images/eye2.png" and row["source_mask"] == "masks/eye2.png"
    assert not row["fov_derived"] and ds.stats["train"]["fov_source"] == "given"
    f = generate_fundus(64, seed=9, index=2)
    assert np.array_equal(ds.image("eye2"), f.image)
    assert np.array_equal(ds.mask("eye2"), f.mask) and np.array_equal(ds.fov("eye2"), f.fov)
    assert ds.image("eye2").dtype == np.uint8 and ds.mask("eye2").dtype == np.bool_


def test_generic_folder_without_fov_records_derived_fovs(tmp_path):
    source = build_generic(tmp_path / "mine", fov=False)
    prepare_dataset(DataPrepConfig(source=str(source), layout="generic"), tmp_path / "out")
    ds = PreparedDataset(tmp_path / "out")
    assert ds.index["fov_derived"].all()
    assert {ds.stats[s]["fov_source"] for s in ("train", "val", "test")} == {"derived"}


def _seed_putting(a, b, same_split: bool):
    ids = [(f"eye{i}", None) for i in range(5)]
    for seed in range(100):
        splits = assign_splits(ids, SplitConfig(seed=seed))
        if (splits[a] == splits[b]) == same_split:
            return seed
    raise AssertionError("no such seed")


@pytest.mark.parametrize("same_split", [False, True])
def test_duplicate_image_fails_and_publishes_nothing(tmp_path, same_split):
    source = build_generic(tmp_path / "mine")
    # Same pixels, another format and name: still the same picture.
    with Image.open(source / "images" / "eye1.png") as img:
        img.save(source / "images" / "eye3.bmp")
    (source / "images" / "eye3.png").unlink()
    seed = _seed_putting("eye1", "eye3", same_split)
    cfg = DataPrepConfig(source=str(source), split=SplitConfig(seed=seed))
    expected = "duplicate images in the" if same_split else "leakage"
    with pytest.raises(DataError, match=rf"{expected}.*images/eye1\.png.*images/eye3\.bmp"):
        prepare_dataset(cfg, tmp_path / "out" / "dataset")
    assert list((tmp_path / "out").iterdir()) == []


def test_corrupt_last_file_fails_and_publishes_nothing(tmp_path):
    source = build_generic(tmp_path / "mine")
    (source / "masks" / "eye4.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"cannot read mask .*eye4\.png"):
        prepare_dataset(DataPrepConfig(source=str(source)), tmp_path / "out" / "dataset")
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_output_is_never_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists and is not empty"):
        prepare_dataset(DataPrepConfig(synthetic=SYNTH), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_dataset(DataPrepConfig(synthetic=SYNTH), empty).n_images == 6


def test_config_errors(tmp_path):
    with pytest.raises(ValidationError, match="applies to folder sources"):
        DataPrepConfig(layout="drive")
    with pytest.raises(ValidationError):
        DataPrepConfig(sorce="synthetic")
    with pytest.raises(DataError, match=r"'.*nowhere' is neither 'synthetic' nor an existing folder"):
        prepare_dataset(DataPrepConfig(source=str(tmp_path / "nowhere")), tmp_path / "out")
    with pytest.raises(DataError, match=r"cannot tell the dataset layout"):
        (tmp_path / "odd").mkdir()
        (tmp_path / "odd" / "readme.txt").write_text("hi")
        prepare_dataset(DataPrepConfig(source=str(tmp_path / "odd")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepared_dataset_errors(synthetic_dataset, tmp_path):
    with pytest.raises(DataError, match=r"not a prepared dataset: .*index\.parquet is missing"):
        PreparedDataset(tmp_path)
    copy = Path(shutil.copytree(synthetic_dataset[0], tmp_path / "copy"))
    (copy / "masks" / "synthetic_0002.png").unlink()
    ds = PreparedDataset(copy)
    with pytest.raises(DataError, match=r"masks/synthetic_0002\.png is listed in .* but missing"):
        ds.mask("synthetic_0002")
    with pytest.raises(DataError, match=r"sample 'nope' is not in"):
        ds.image("nope")
    with pytest.raises(DataError, match="unknown split"):
        ds.ids("validation")
    (copy / "fingerprint.json").unlink()
    with pytest.raises(DataError, match=r"fingerprint\.json is missing"):
        _ = ds.fingerprint

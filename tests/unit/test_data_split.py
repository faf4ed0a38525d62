"""Deterministic splits, official splits, and the guard against duplicated images."""

from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from vesselseg.data import ContentRecord, LeakageGuard, SplitConfig, assign_splits, pixel_sha256
from vesselseg.errors import DataError

IDS = [f"img{i:02d}" for i in range(20)]


def unofficial(ids=IDS):
    return [(sid, None) for sid in ids]


def test_fractions_of_all_images_without_official_split():
    splits = assign_splits(unofficial(), SplitConfig())
    assert set(splits) == set(IDS)
    assert Counter(splits.values()) == {"train": 12, "val": 4, "test": 4}


def test_same_seed_same_split_and_other_seed_other_split():
    a = assign_splits(unofficial(), SplitConfig(seed=3))
    assert a == assign_splits(list(reversed(unofficial())), SplitConfig(seed=3))  # listing order is irrelevant
    assert a != assign_splits(unofficial(), SplitConfig(seed=4))


def test_official_split_keeps_test_and_draws_val_from_train():
    samples = [(f"{i:02d}_test", "test") for i in range(1, 21)] + [(f"{i}_training", "train") for i in range(21, 41)]
    splits = assign_splits(samples, SplitConfig(test_fraction=0.3))
    assert all(splits[f"{i:02d}_test"] == "test" for i in range(1, 21))
    assert Counter(splits[f"{i}_training"] for i in range(21, 41)) == {"train": 16, "val": 4}
    ignored = assign_splits(samples, SplitConfig(use_official_split=False))
    assert Counter(ignored.values()) == {"train": 24, "val": 8, "test": 8}
    assert any(ignored[f"{i:02d}_test"] != "test" for i in range(1, 21))


def test_official_train_part_alone_also_gives_a_test_split():
    splits = assign_splits([(f"{i}_training", "train") for i in range(21, 41)], SplitConfig())
    assert Counter(splits.values()) == {"train": 12, "val": 4, "test": 4}


def test_partial_official_split_is_not_used():
    samples = [("a", "train"), ("b", "test"), ("c", None), ("d", None), ("e", None)]
    splits = assign_splits(samples, SplitConfig())
    assert Counter(splits.values()) == {"train": 3, "val": 1, "test": 1}


def test_small_datasets_get_one_image_per_requested_split_or_an_error():
    assert Counter(assign_splits(unofficial(["a", "b", "c"]), SplitConfig()).values()) == {
        "train": 1, "val": 1, "test": 1,
    }  # fmt: skip
    no_val = assign_splits(unofficial(["a", "b"]), SplitConfig(val_fraction=0))
    assert Counter(no_val.values()) == {"train": 1, "test": 1}
    with pytest.raises(DataError, match="2 images are too few"):
        assign_splits(unofficial(["a", "b"]), SplitConfig())


def test_fractions_are_validated():
    with pytest.raises(ValidationError, match="must be below 1"):
        SplitConfig(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValidationError):
        SplitConfig(val_fraction=-0.1)
    with pytest.raises(ValidationError):
        SplitConfig(shuffle=True)


def test_pixel_hash_depends_on_content_and_shape_only():
    a = np.arange(12, dtype=np.uint8)
    assert pixel_sha256(a.reshape(3, 4)) == pixel_sha256(a.reshape(3, 4).copy(order="F"))
    assert pixel_sha256(a.reshape(3, 4)) != pixel_sha256(a.reshape(4, 3))
    b = a.copy()
    b[5] += 1
    assert pixel_sha256(a) != pixel_sha256(b)


def test_duplicate_across_splits_is_leakage_naming_both_files():
    guard = LeakageGuard()
    guard.add(ContentRecord("a", "train", "h1", "images/a.png"))
    guard.add(ContentRecord("b", "test", "h2", "images/b.png"))
    with pytest.raises(DataError, match=r"leakage: images/b\.png \(test\) and images/c\.jpg \(val\)"):
        guard.add(ContentRecord("c", "val", "h2", "images/c.jpg"))


def test_duplicate_within_a_split_is_an_error_too():
    guard = LeakageGuard()
    guard.add(ContentRecord("a", "train", "h1", "images/a.png"))
    with pytest.raises(DataError, match=r"duplicate images in the train split: images/a\.png and images/z\.png.*bias"):
        guard.add(ContentRecord("z", "train", "h1", "images/z.png"))

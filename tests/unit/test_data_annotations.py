"""COCO RLE encoding of masks in the Sa2VA annotation files."""

import json

import numpy as np
import pytest

from vesselseg.data import annotation_entry, decode_rle, encode_rle, read_annotations, write_annotations
from vesselseg.data.synthetic import generate_fundus


def masks():
    rng = np.random.default_rng(0)
    yield np.zeros((7, 5), bool)
    yield np.ones((5, 7), bool)
    yield np.indices((9, 13)).sum(axis=0) % 2 == 0  # checkerboard: the longest possible RLE
    yield rng.random((31, 17)) < 0.3
    yield generate_fundus(96, 1).mask


@pytest.mark.parametrize("mask", list(masks()), ids=["empty", "full", "checker", "random", "vessels"])
def test_rle_round_trip_through_json(mask):
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str)
    assert rle["size"] == list(mask.shape)
    back = decode_rle(json.loads(json.dumps(rle)))
    assert back.dtype == np.bool_ and back.shape == mask.shape
    assert np.array_equal(back, mask)


def test_rle_decodes_bytes_counts_too():
    mask = generate_fundus(64, 2).mask
    rle = encode_rle(mask)
    assert np.array_equal(decode_rle({"size": rle["size"], "counts": rle["counts"].encode()}), mask)


def test_annotation_file_format(tmp_path):
    mask = generate_fundus(64, 3).mask
    path = tmp_path / "annotations" / "train.json"
    write_annotations(path, [annotation_entry("images/x.png", mask, "retinal vessels")])
    (entry,) = json.loads(path.read_text())
    assert set(entry) == {"image", "mask", "text"}
    assert entry["image"] == "images/x.png" and entry["text"] == ["retinal vessels"]
    assert len(entry["mask"]) == 1 and np.array_equal(decode_rle(entry["mask"][0]), mask)
    assert read_annotations(path) == [entry]

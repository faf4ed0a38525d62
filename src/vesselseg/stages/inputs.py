"""Fetching published inputs into a stage's scratch folder, only the files the stage may see."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vesselseg.data import PreparedDataset
from vesselseg.data.prepare import TEST_LABELS_DIR, TEST_SPLIT
from vesselseg.errors import DataError
from vesselseg.predictions import PredictionSet
from vesselseg.stages.test_labels import label_store
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, read_manifest, resolve

# Small dataset-level files every reader needs.
DATASET_META = ("index.parquet", "stats.json", "fingerprint.json")


def fetch_dataset(
    store: ObjectStore,
    ref: InputRef | str,
    local: Path,
    splits: list[str],
    truth_splits: list[str],
    test_labels: InputRef | None = None,
) -> PreparedDataset:
    """Images and FOVs of `splits`, ground truth of `truth_splits` only.

    The test split's ground truth is not in the dataset artifact at all: it comes from `test_labels` (the
    separate artifact, see `resolve_test_labels`), which only the scoring stages are given.
    """
    if TEST_SPLIT in truth_splits and test_labels is None:
        raise DataError(f"the {TEST_SPLIT} split's ground truth is its own artifact: give the test_labels input")
    manifest = read_manifest(store, ref)
    fetch_dir(store, ref, local, only=[p for p in DATASET_META if any(f.path == p for f in manifest.files)])
    index = pd.read_parquet(local / "index.parquet")
    wanted: list[str] = []
    for split in splits:
        rows = index[index["split"] == split]
        wanted += list(rows["image"]) + list(rows["fov"])
        if split in truth_splits and split != TEST_SPLIT:
            wanted += list(rows["mask"])
    fetch_dir(store, ref, local, only=sorted(set(wanted)))
    if test_labels is not None:
        fetch_dir(label_store(store), test_labels, local / TEST_LABELS_DIR)
    return PreparedDataset(local)


def resolve_test_labels(store: ObjectStore, ref: InputRef | str | None) -> InputRef | None:
    """Pin a test-label reference (a bare URI gets its manifest hash) in the test-label bucket."""
    return None if ref is None else resolve(label_store(store), ref)


def fetch_predictions(store: ObjectStore, ref: InputRef | str, local: Path) -> PredictionSet:
    fetch_dir(store, ref, local)
    return PredictionSet(local)

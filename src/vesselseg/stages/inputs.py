"""Fetching published inputs into a stage's scratch folder, only the files the stage may see."""

from __future__ import annotations

from pathlib import Path

from vesselseg.data import PreparedDataset
from vesselseg.data.fetch import fetch_splits
from vesselseg.data.prepare import TEST_LABELS_DIR, TEST_SPLIT
from vesselseg.errors import DataError
from vesselseg.predictions import PredictionSet
from vesselseg.stages.test_labels import label_store
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, resolve


def fetch_dataset(
    store: ObjectStore,
    ref: InputRef | str,
    local: Path,
    splits: list[str],
    truth_splits: list[str],
    test_labels: InputRef | None = None,
    images: bool = True,
) -> PreparedDataset:
    """Images (unless `images` is False) and FOVs of `splits`, ground truth of `truth_splits` only.

    The test split's ground truth is not in the dataset artifact at all: it comes from `test_labels` (the
    separate artifact, see `resolve_test_labels`), which only the scoring stages are given.
    """
    if TEST_SPLIT in truth_splits and test_labels is None:
        raise DataError(f"the {TEST_SPLIT} split's ground truth is its own artifact: give the test_labels input")
    fetch_splits(store, ref, local, splits, truth_splits, images=images)
    if test_labels is not None:
        # Not through the machine's shared cache: test ground truth stays in the scoring stage's own scratch.
        fetch_dir(label_store(store), test_labels, local / TEST_LABELS_DIR, cache=False)
    return PreparedDataset(local)


def resolve_test_labels(store: ObjectStore, ref: InputRef | str | None) -> InputRef | None:
    """Pin a test-label reference (a bare URI gets its manifest hash) in the test-label bucket."""
    return None if ref is None else resolve(label_store(store), ref)


def fetch_predictions(store: ObjectStore, ref: InputRef | str, local: Path) -> PredictionSet:
    fetch_dir(store, ref, local)
    return PredictionSet(local)

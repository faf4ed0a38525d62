"""Fetching published inputs into a stage's scratch folder, only the files the stage may see."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vesselseg.data import PreparedDataset
from vesselseg.predictions import PredictionSet
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, read_manifest

# Small dataset-level files every reader needs.
DATASET_META = ("index.parquet", "stats.json", "fingerprint.json")


def fetch_dataset(
    store: ObjectStore, ref: InputRef | str, local: Path, splits: list[str], truth_splits: list[str]
) -> PreparedDataset:
    """Images and FOVs of `splits`, ground truth of `truth_splits` only.

    A stage that must not see test ground truth (baseline, inference) simply never downloads it.
    """
    manifest = read_manifest(store, ref)
    fetch_dir(store, ref, local, only=[p for p in DATASET_META if any(f.path == p for f in manifest.files)])
    index = pd.read_parquet(local / "index.parquet")
    wanted: list[str] = []
    for split in splits:
        rows = index[index["split"] == split]
        wanted += list(rows["image"]) + list(rows["fov"])
        if split in truth_splits:
            wanted += list(rows["mask"])
    fetch_dir(store, ref, local, only=sorted(set(wanted)))
    return PreparedDataset(local)


def fetch_predictions(store: ObjectStore, ref: InputRef | str, local: Path) -> PredictionSet:
    fetch_dir(store, ref, local)
    return PredictionSet(local)

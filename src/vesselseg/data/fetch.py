"""Fetching a published dataset's files for some splits only: the images and FOVs of `splits`, the ground truth of
`truth_splits`. The test split's ground truth is not in a dataset artifact at all (its own artifact, which only the
scoring stages are given: stages/inputs.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vesselseg.data.prepare import TEST_SPLIT
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, read_manifest

# Small dataset-level files every reader needs.
DATASET_META = ("index.parquet", "stats.json", "fingerprint.json")


def fetch_splits(
    store: ObjectStore,
    ref: InputRef | str,
    local: Path,
    splits: list[str],
    truth_splits: list[str],
    images: bool = True,
) -> None:
    """`images=False` leaves the RGB images out (a scorer reads masks and FOVs only)."""
    manifest = read_manifest(store, ref)
    fetch_dir(store, ref, local, only=[p for p in DATASET_META if any(f.path == p for f in manifest.files)])
    index = pd.read_parquet(local / "index.parquet")
    wanted: list[str] = []
    for split in splits:
        rows = index[index["split"] == split]
        wanted += (list(rows["image"]) if images else []) + list(rows["fov"])
        if split in truth_splits and split != TEST_SPLIT:
            wanted += list(rows["mask"])
    fetch_dir(store, ref, local, only=sorted(set(wanted)))

"""Read access to a prepared dataset (the folder ``prepare_dataset`` writes) for the later stages.

The test split's ground truth is read only where a ``test_labels/`` folder sits in the dataset folder: where
data-prep wrote it, or where a scoring stage fetched the separate test-label artifact. Elsewhere the test
rows have images and FOVs but no masks, and asking for one is an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vesselseg.data.prepare import INDEX_COLUMNS, TEST_LABEL_COLUMNS, TEST_LABELS_DIR, TEST_SPLIT
from vesselseg.data.samples import SPLITS, Split
from vesselseg.errors import DataError
from vesselseg.storage.paths import inside


class PreparedDataset:
    """A prepared dataset folder. Pixels are read on demand; nothing is cached."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        index_path = self.root / "index.parquet"
        if not index_path.is_file():
            raise DataError(f"{self.root} is not a prepared dataset: {index_path} is missing")
        try:
            self.index: pd.DataFrame = pd.read_parquet(index_path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {index_path}: {exc}") from exc
        missing = [c for c in INDEX_COLUMNS if c not in self.index.columns]
        if missing:
            raise DataError(f"{index_path} lacks the columns {missing}")
        self.has_test_labels = (self.root / TEST_LABELS_DIR / "labels.parquet").is_file()
        if self.has_test_labels:
            self.index = self._with_test_labels(self.index)
        self._rows = self.index.set_index("sample_id")

    def _with_test_labels(self, index: pd.DataFrame) -> pd.DataFrame:
        """The index with the test rows' label columns filled from test_labels/ (paths made relative to root)."""
        folder = self.root / TEST_LABELS_DIR
        path = folder / "labels.parquet"
        try:
            labels = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        missing = [c for c in ("sample_id", *TEST_LABEL_COLUMNS) if c not in labels.columns]
        if missing:
            raise DataError(f"{path} lacks the columns {missing}")
        mine = self._json("fingerprint.json").get("fingerprint")
        theirs = json.loads((folder / "fingerprint.json").read_text()).get("fingerprint")
        if mine != theirs:
            raise DataError(
                f"the test labels in {folder} belong to dataset {str(theirs)[:16]}, "
                f"not to {str(mine)[:16]} ({self.root})"
            )
        test_ids = set(index.loc[index["split"] == TEST_SPLIT, "sample_id"])
        if set(labels["sample_id"]) != test_ids:
            raise DataError(f"{path} does not list exactly the test split's {len(test_ids)} samples")
        merged = index.astype({c: object for c in TEST_LABEL_COLUMNS}).set_index("sample_id")
        labels = labels.set_index("sample_id")
        for column in ("mask", "mask_2nd"):
            labels[column] = [None if pd.isna(p) else f"{TEST_LABELS_DIR}/{p}" for p in labels[column]]
        for column in TEST_LABEL_COLUMNS:
            merged.loc[labels.index, column] = labels[column].astype(object)
        merged["vessel_fraction_fov"] = merged["vessel_fraction_fov"].astype(float)
        return merged.reset_index()

    def ids(self, split: Split | None = None) -> list[str]:
        """Sample ids, sorted; of one split when ``split`` is given."""
        if split is not None and split not in SPLITS:
            raise DataError(f"unknown split {split!r}; splits are {SPLITS}")
        rows = self.index if split is None else self.index[self.index["split"] == split]
        return sorted(rows["sample_id"])

    def image(self, sample_id: str) -> np.ndarray:
        """uint8 (H, W, 3) RGB."""
        with Image.open(self._file(sample_id, "image")) as img:
            return np.asarray(img.convert("RGB"))

    def mask(self, sample_id: str) -> np.ndarray:
        """bool (H, W) vessel mask of the (first) annotator."""
        self._require_labels(sample_id)
        return self._read_mask(self._file(sample_id, "mask"))

    def fov(self, sample_id: str) -> np.ndarray:
        """bool (H, W) field of view."""
        return self._read_mask(self._file(sample_id, "fov"))

    def mask_2nd(self, sample_id: str) -> np.ndarray | None:
        """bool (H, W) second annotator's mask, or None where the dataset has none for this image."""
        self._require_labels(sample_id)
        if pd.isna(self._row(sample_id)["mask_2nd"]):
            return None
        return self._read_mask(self._file(sample_id, "mask_2nd"))

    @property
    def stats(self) -> dict[str, Any]:
        """stats.json; the test split's label-derived numbers only where the test labels are here."""
        stats = self._json("stats.json")
        if self.has_test_labels:
            stats.update(self._json(f"{TEST_LABELS_DIR}/stats.json"))
        return stats

    @property
    def fingerprint(self) -> str:
        return str(self._json("fingerprint.json")["fingerprint"])

    def _require_labels(self, sample_id: str) -> None:
        if self._row(sample_id)["split"] == TEST_SPLIT and not self.has_test_labels:
            raise DataError(
                f"no ground truth for {sample_id!r} in {self.root}: the test split's labels are their own artifact "
                f"({TEST_LABELS_DIR}/), given only to the stages that score"
            )

    def _row(self, sample_id: str) -> pd.Series:
        if sample_id not in self._rows.index:
            raise DataError(f"sample {sample_id!r} is not in {self.root / 'index.parquet'}")
        return self._rows.loc[sample_id]

    def _file(self, sample_id: str, column: str) -> Path:
        where = f"{self.root / 'index.parquet'} (sample {sample_id!r}, column {column!r})"
        path = inside(self.root, str(self._row(sample_id)[column]), where, DataError)
        if not path.is_file():
            raise DataError(f"{path} is listed in {self.root / 'index.parquet'} but missing")
        return path

    def _read_mask(self, path: Path) -> np.ndarray:
        with Image.open(path) as img:
            return np.asarray(img.convert("L")) >= 128

    def _json(self, name: str) -> dict[str, Any]:
        path = self.root / name
        if not path.is_file():
            raise DataError(f"{self.root} is not a complete prepared dataset: {path} is missing")
        return json.loads(path.read_text())

"""The prediction-set format: this module alone reads and writes it (baselines, inference and its resume state
write through `write_map`/`PredictionWriter`; evaluation and the report read through `PredictionSet`).

```
probs/<id>.png        8-bit probability map at the image's native size: stored level v stands for p = v / 255
predictions.parquet   sample_id, split, prob, height, width (+ n_seg, text in generate mode)
predictor.json        PredictorInfo: name, its own threshold, whether the map is calibrated, which files were read
```
In memory a map is a `metrics.ProbabilityMap` (its 8-bit levels and sample id) from encoding to scoring: writers take
one, `PredictionSet.prob` returns one. No binary mask is stored: a reader cuts the map with `mask_at` at the level of
the threshold it chose.
`read_files` lists every dataset file the predictor opened (paths inside the dataset artifact). It is the evidence
the evaluation's leakage check reads: no test-split ground truth may appear there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.errors import DataError
from vesselseg.metrics.levels import ProbabilityMap
from vesselseg.storage.paths import inside

INFO = "predictor.json"
TABLE = "predictions.parquet"
MAPS = "probs"


def map_path(root: Path, sample_id: str) -> Path:
    return inside(root, f"{MAPS}/{sample_id}.png", f"prediction map of {sample_id!r} in {root}", DataError)


def write_map(root: Path, prob: ProbabilityMap) -> str:
    """Writes `probs/<sample id>.png` under `root` (via a temporary name, so a crash never leaves half a file);
    returns the PNG's sha256."""
    buffer = io.BytesIO()
    Image.fromarray(prob.levels).save(buffer, format="PNG")
    blob = buffer.getvalue()
    path = map_path(root, prob.sample_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    partial.write_bytes(blob)
    partial.replace(path)
    return hashlib.sha256(blob).hexdigest()


def read_map(path: Path, sample_id: str) -> ProbabilityMap:
    """One stored map; `DataError` naming the file if it is not one."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img)
    except OSError as err:
        raise DataError(f"cannot read probability map {path}: {err}") from err
    try:
        return ProbabilityMap(array, sample_id)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


class PredictorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="short name used in tables: frangi, model, …")
    threshold: float = Field(ge=0, le=1, description="the predictor's own decision threshold")
    threshold_source: str
    calibrated: bool = Field(description="False when the map is a 0/1 mask or a ranking score (AUC not meaningful)")
    read_files: list[str] = Field(description="dataset files the predictor opened")
    details: dict[str, object] = Field(default_factory=dict)


class PredictionWriter:
    """Writes one prediction set into a local folder; `close` writes the table and the info last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / MAPS).mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, object]] = []

    def _row(self, sample_id: str, split: str, height: int, width: int, extra: dict[str, object]) -> None:
        self.rows.append(
            {
                "sample_id": sample_id,
                "split": split,
                "prob": f"{MAPS}/{sample_id}.png",
                "height": height,
                "width": width,
                **extra,
            }  # fmt: skip
        )

    def add(self, split: str, prob: ProbabilityMap, **extra: object) -> None:
        write_map(self.root, prob)
        self._row(prob.sample_id, split, prob.shape[0], prob.shape[1], extra)

    def adopt(self, sample_id: str, split: str, written: Path, height: int, width: int, **extra: object) -> None:
        """Takes a map already written by `write_map` elsewhere (inference's resume state) as it is: a hard link
        (a copy across file systems), never decoded and encoded again."""
        target = map_path(self.root, sample_id)
        try:
            os.link(written, target)
        except OSError:
            shutil.copyfile(written, target)
        self._row(sample_id, split, height, width, extra)

    def close(self, info: PredictorInfo) -> None:
        pd.DataFrame(self.rows).to_parquet(self.root / TABLE, index=False)
        (self.root / INFO).write_text(info.model_dump_json(indent=2))


class PredictionSet:
    """A prediction set on local disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in (INFO, TABLE):
            if not (root / name).exists():
                raise DataError(f"{root} is not a prediction set: {name} is missing")
        self.info = PredictorInfo.model_validate(json.loads((root / INFO).read_text()))
        self.table = pd.read_parquet(root / TABLE).set_index("sample_id", drop=False)

    def ids(self, split: str) -> list[str]:
        return sorted(self.table.index[self.table["split"] == split])

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self.table.index

    def shape(self, sample_id: str) -> tuple[int, int]:
        """The map's (height, width) from the table, without decoding it."""
        return int(self.table.at[sample_id, "height"]), int(self.table.at[sample_id, "width"])

    def prob(self, sample_id: str) -> ProbabilityMap:
        if sample_id not in self:
            raise DataError(f"prediction set {self.info.name!r} at {self.root} has no prediction for {sample_id!r}")
        path = inside(
            self.root, str(self.table.at[sample_id, "prob"]), f"{self.root / TABLE} ({sample_id!r})", DataError
        )
        return read_map(path, sample_id)

"""The prediction-set format shared by the baseline and inference stages and read by evaluation.

```
probs/<id>.png        8-bit probability map (p = value / 255) at the image's native size
masks/<id>.png        binary mask, 0/255, at the predictor's own threshold
predictions.parquet   sample_id, split, prob, mask, height, width (+ n_seg, text in generate mode)
predictor.json        PredictorInfo: name, threshold, whether the map is calibrated, which files were read
```
`read_files` lists every dataset file the predictor opened (paths inside the dataset artifact). It is
the evidence the evaluation's leakage check reads: no test-split ground truth may appear there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.errors import DataError
from vesselseg.metrics import level
from vesselseg.storage.paths import inside

INFO = "predictor.json"
TABLE = "predictions.parquet"


def encode_probability(probability: np.ndarray) -> np.ndarray:
    """The format's 8-bit map of a probability (or score scaled to [0, 1]) map: value = round(255·p), clipped."""
    return np.rint(np.clip(probability, 0.0, 1.0) * 255.0).astype(np.uint8)


class PredictorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="short name used in tables: frangi, model, …")
    threshold: float = Field(ge=0, le=1, description="threshold the stored masks were cut at")
    threshold_source: str
    calibrated: bool = Field(description="False when the map is a 0/1 mask or a ranking score (AUC not meaningful)")
    read_files: list[str] = Field(description="dataset files the predictor opened")
    details: dict[str, object] = Field(default_factory=dict)


class PredictionWriter:
    """Writes one prediction set into a local folder; `close` writes the table and the info last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "probs").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, object]] = []

    def add(self, sample_id: str, split: str, prob: np.ndarray, threshold: float, **extra: object) -> None:
        if prob.dtype != np.uint8 or prob.ndim != 2:
            raise DataError(f"prediction for {sample_id!r} must be uint8 (H, W), got {prob.dtype} {prob.shape}")
        Image.fromarray(prob).save(self.root / "probs" / f"{sample_id}.png")
        mask = np.where(prob >= level(threshold), 255, 0).astype(np.uint8)
        Image.fromarray(mask).save(self.root / "masks" / f"{sample_id}.png")
        self.rows.append(
            {
                "sample_id": sample_id,
                "split": split,
                "prob": f"probs/{sample_id}.png",
                "mask": f"masks/{sample_id}.png",
                "height": prob.shape[0],
                "width": prob.shape[1],
                **extra,
            }
        )

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

    def prob(self, sample_id: str) -> np.ndarray:
        if sample_id not in self.table.index:
            raise DataError(f"prediction set {self.info.name!r} at {self.root} has no prediction for {sample_id!r}")
        path = inside(
            self.root, str(self.table.at[sample_id, "prob"]), f"{self.root / TABLE} ({sample_id!r})", DataError
        )
        try:
            array = np.asarray(Image.open(path))
        except OSError as err:
            raise DataError(f"cannot read probability map {path}: {err}") from err
        if array.dtype != np.uint8 or array.ndim != 2:
            raise DataError(f"probability map {path} must be 8-bit single-channel, got {array.dtype} {array.shape}")
        return array

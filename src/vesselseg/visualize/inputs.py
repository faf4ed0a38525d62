"""Reading what the report draws: the evaluation folder and the optional training log."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from pydantic import ValidationError

from vesselseg.errors import DataError
from vesselseg.evaluate import EvaluationSummary

EVALUATION_FILES = ("summary.json", "aggregate.json", "per_image.parquet", "curves.json")
TRAIN_LOG_REQUIRED = ("step", "loss", "lr")


@dataclass(frozen=True)
class Evaluation:
    summary: EvaluationSummary
    aggregates: dict[str, Any]  # aggregate.json's "aggregates": per predictor and baseline
    per_image: pd.DataFrame
    curves: dict[str, Any]
    sha256: dict[str, str]  # file name -> hash, so the report names the exact numbers it drew

    def scored_rows(self, name: str) -> pd.DataFrame:
        """Per-image rows of a predictor at its chosen threshold (baselines only have the fixed 0.5)."""
        rows = self.per_image[self.per_image["predictor"] == name]
        kind = "selected" if (rows["threshold_kind"] == "selected").any() else "fixed_0.5"
        return rows[rows["threshold_kind"] == kind].set_index("sample_id", drop=False)

    def chosen(self, name: str) -> dict[str, Any]:
        """aggregate.json's block for a predictor at its chosen threshold (see ``scored_rows``)."""
        block = self.aggregates[name]
        return block.get("selected", block["fixed_0.5"])


def read_evaluation(folder: Path) -> Evaluation:
    missing = [name for name in EVALUATION_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} is not an evaluation folder: {', '.join(missing)} missing")
    try:
        summary = EvaluationSummary.model_validate_json((folder / "summary.json").read_text())
        aggregates = json.loads((folder / "aggregate.json").read_text())["aggregates"]
        curves = json.loads((folder / "curves.json").read_text())
        per_image = pd.read_parquet(folder / "per_image.parquet")
    except (OSError, ValueError, KeyError, ValidationError) as err:
        raise DataError(f"cannot read the evaluation in {folder}: {err}") from err
    hashes = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in EVALUATION_FILES}
    return Evaluation(summary, aggregates, per_image, curves, hashes)


def read_train_log(path: Path) -> pd.DataFrame:
    """One row per logged step, sorted by step; fields a step lacks (e.g. val_dice) are NaN.

    Training lines carry step, loss and lr; validation lines (step, val_dice, …) are merged into their step.
    """
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise DataError(f"cannot read training log {path}: {err}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number} is not JSON: {err}") from err
        validation = isinstance(record, dict) and "step" in record and "val_dice" in record
        if not isinstance(record, dict) or (not validation and any(key not in record for key in TRAIN_LOG_REQUIRED)):
            raise DataError(
                f"{path}:{number} must be an object with at least {', '.join(TRAIN_LOG_REQUIRED)} "
                "(or a validation line with step and val_dice)"
            )
        records.append(record)
    if not records:
        raise DataError(f"training log {path} holds no steps")
    table = pd.DataFrame.from_records(records).groupby("step", as_index=False, sort=True).first()
    if "loss" not in table:  # every training line has a loss, so only validation lines were read
        raise DataError(f"training log {path} holds no training steps, only validation lines")
    numeric = [c for c in table.columns if is_numeric_dtype(table[c]) and not is_bool_dtype(table[c])]
    wrong = [c for c in TRAIN_LOG_REQUIRED if c not in numeric]
    if wrong:
        raise DataError(f"training log {path}: {', '.join(wrong)} must be numbers on every line")
    # Text fields (phase names, messages) have nothing to plot.
    return table[numeric].sort_values("step", ignore_index=True)

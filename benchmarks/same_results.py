"""Whether two `vesselseg run-local` runs scored the same: their summary.json metrics and evaluation per-image rows.

``.venv/bin/python benchmarks/same_results.py <run A> <run B>``, where a run folder holds `runs/latest/summary.json`
(run-local's `--out runs`) and `log.txt` (its output, which names the evaluation artifact it published; that
artifact's `per_image.parquet` is fetched from the object store). Prints each predictor's test Dice in both runs and
the largest absolute difference over every summary metric and every numeric per-image column; exits 1 above 1e-6.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from vesselseg.storage import ObjectStore, fetch_dir

EVALUATION = re.compile(r"s3://mlpipeline/vesselseg/(?:[\w./-]+/)?evaluations/[0-9a-f]+/")
KEY = ["predictor", "sample_id", "threshold_kind"]


def per_image(run: Path) -> pd.DataFrame:
    uris = sorted(set(EVALUATION.findall((run / "log.txt").read_text())))
    if len(uris) != 1:
        raise SystemExit(f"{run / 'log.txt'} names {len(uris)} evaluation artifacts, not one: {uris}")
    fetch_dir(ObjectStore(), uris[0], run / "evaluation", cache=False)
    return pd.read_parquet(run / "evaluation" / "per_image.parquet").sort_values(KEY).reset_index(drop=True)


def summary_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for name, metrics in a["metrics"].items():
        for metric, value in metrics.items():
            other = b["metrics"][name][metric]
            if value is None or other is None:
                if (value is None) != (other is None):
                    return float("inf")
                continue
            worst = max(worst, abs(value - other))
    return worst


def main() -> int:
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    sa, sb = (json.loads((run / "runs" / "latest" / "summary.json").read_text()) for run in (a, b))
    for name in sa["metrics"]:
        print(f"{name}: test Dice {sa['metrics'][name]['dice']!r} vs {sb['metrics'][name]['dice']!r}")
    summary = summary_difference(sa, sb)
    ta, tb = per_image(a), per_image(b)
    if list(ta.columns) != list(tb.columns) or not ta[KEY].equals(tb[KEY]):
        print("per-image tables differ in their columns or rows")
        return 1
    numeric = ta.select_dtypes("number").columns
    same_nans = bool((ta[numeric].isna() == tb[numeric].isna()).all().all())
    rows = float(np.nanmax(np.abs(ta[numeric].to_numpy(float) - tb[numeric].to_numpy(float))))
    print(f"largest difference: summary metrics {summary}, per-image rows ({len(ta)} rows, {len(numeric)} numeric "
          f"columns) {rows}; NaNs in the same places: {same_nans}")  # fmt: skip
    return 0 if summary <= 1e-6 and rows <= 1e-6 and same_nans else 1


if __name__ == "__main__":
    sys.exit(main())

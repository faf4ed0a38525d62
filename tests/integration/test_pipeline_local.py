"""The real pipeline through kfp.local against the real object store, twice: the second run hits the cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.conftest import SHORT_DAG
from vesselseg.local_run import run_local

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_local_pipeline_runs_and_reuses_its_cache(
    store_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VESSELSEG_HOME", str(tmp_path / "home"))
    overrides = ["seed=3", *SHORT_DAG]
    first = run_local(ROOT / "pipeline.py", overrides, tmp_path / "runs")
    summary = json.loads((tmp_path / "runs" / "latest" / "summary.json").read_text())
    assert set(summary["metrics"]) == {"model", "frangi", "all_background", "all_foreground"}
    assert summary["metrics"]["frangi"]["dice"] > summary["metrics"]["all_background"]["dice"]
    # Four CPU steps train nothing worth a number; the model is scored all the same, beside the baselines.
    assert 0.0 <= summary["metrics"]["model"]["dice"] <= 1.0
    # The real model's and Frangi's predictions pass every honesty and plausibility check.
    checks = {(c["name"], c["predictor"]) for c in summary["honesty"]}
    assert {("noise_like_errors", "model"), ("subset_of_truth", "frangi")} <= checks
    assert [c["detail"] for c in summary["honesty"] if not c["passed"]] == []
    report = (tmp_path / "runs" / "latest" / "report.html").read_text()
    assert report.lower().startswith("<!doctype html>") and "frangi" in report and "model" in report
    assert "parity" in report and "max_abs_error" in report, "the conversion's parity check belongs in the report"
    assert "reached only: <b>data-prep, evaluate, visualize</b>. Not given to: baseline, convert, finetune, infer" in (
        report
    )
    with caplog.at_level(logging.INFO):
        second = run_local(ROOT / "pipeline.py", overrides, tmp_path / "runs")
    hits = [r for r in caplog.records if "cache hit" in r.getMessage()]
    assert len(hits) == 7, [r.getMessage() for r in caplog.records][-20:]
    assert second["wall_s"] < first["wall_s"]

"""The fine-tuning experiment scripts whose numbers docs/measured.md reports: the thin-vessel definition, and both
scripts end to end for a couple of steps (the real stage, the real store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from benchmarks.loss_experiment import thin_zone

ROOT = Path(__file__).resolve().parents[2]
TWO_STEPS = {"steps": 2, "val_every": 2, "checkpoint_every": 2, "log_every": 1}


def test_thin_vessels_are_at_most_two_pixels_wide_and_their_zone_skips_thick_ones() -> None:
    truth = np.zeros((40, 40), bool)
    truth[5, 2:38] = True  # 1 px wide
    truth[12:14, 2:38] = True  # 2 px wide
    truth[22:30, 2:38] = True  # 8 px wide
    fov = np.ones_like(truth)
    thin, zone = thin_zone(truth, fov)
    assert thin[5, 2:38].all() and thin[12:14, 2:38].all()
    assert not thin[26, 10:30].any(), "the core of an 8-px vessel is not thin"
    assert zone[5, 10] and zone[7, 10] and not zone[8, 10], "the zone reaches 2 px around thin vessels"
    assert not zone[20, 10] and not zone[31, 10], "background beside a thick vessel is outside the zone"
    assert not (zone & ~fov).any()


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_loss_experiment_scores_a_variant_beside_frangi(store_settings, tmp_path: Path) -> None:
    rows, table = tmp_path / "rows.jsonl", tmp_path / "table.md"
    done = _run([str(ROOT / "benchmarks" / "loss_experiment.py"), "--variant", "full_res", "--seeds", "0",
                 "--steps", "2", "--base", json.dumps(TWO_STEPS),
                 "--prefix", f"tests/experiments/{uuid.uuid4().hex[:8]}",
                 "--json", str(rows), "--out", str(table)])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [row] = [json.loads(line) for line in rows.read_text().splitlines()]
    assert (row["variant"], row["seed"], row["steps"]) == ("full_res", 0, 2)
    assert all(0 <= row[k] <= 1 for k in ("test_dice", "thin_dice", "val_dice"))
    text = table.read_text()
    assert "| full_res | 0 |" in text and "| Frangi (baseline stage) |" in text


@pytest.mark.slow
def test_settings_search_reports_the_validation_curve(store_settings) -> None:
    done = _run([str(ROOT / "benchmarks" / "finetune_search.py"),
                 "--base", json.dumps(TWO_STEPS | {"base_model": "preset:tiny"}),
                 "--setting", "a={}", "--prefix", f"tests/search/{uuid.uuid4().hex[:8]}"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert row["setting"] == "a" and [step for step, _, _ in row["curve"]] == [2]
    assert "| a |" in done.stdout

"""`benchmarks/infer_gpu.sh --dry-run`: the GPU benchmark's own code path on the CPU with the tiny preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_prints_and_writes_the_table(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "infer_gpu.sh"), "--dry-run", "--images", "4", "--batch-size", "2"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "infer_gpu.md").read_text()
    assert table in done.stdout
    assert "| tiny, replicas: 2 CPU processes | replicas: 2 × 1 on CPU" in table
    data = json.loads((tmp_path / "infer_gpu.json").read_text())
    assert [o["role"] for o in data["outcomes"]] == ["forced", "replicas", "pipelined", "generate"]
    assert all(o["images"] == 4 and o["images_per_s"] > 0 for o in data["outcomes"])
    assert set(data["agreement"]) == {"tiny, cpu (auto)", "tiny, 3 micro-batches in flight"}
    assert all(check["passed"] and check["images"] == 4 for check in data["agreement"].values())
    assert data["goals"]["forced ≥ 3 × generate"] is not None


@pytest.mark.slow
def test_profile_prints_every_phase_and_the_in_flight_rates() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "infer_profile.py"), "--preset", "tiny", "--images", "8",
         "--in-flight", "1,2"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for phase in ("read", "preprocess", "to device", "forward", "postprocess"):
        assert f"| {phase} | " in done.stdout
    rates = [line for line in done.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rates) == 2 and all(float(line.split("|")[2]) > 0 for line in rates), done.stdout

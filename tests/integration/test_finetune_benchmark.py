"""The training benchmarks' own code paths on the CPU with the tiny preset (GPU numbers: benchmarks/results/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_gpu import build_model, count_flops, flops_of_micro_batch, make_batch  # noqa: E402
from train_profile import busy_ns, kernel_family  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def test_micro_batch_flops_extend_linearly_from_one_and_two_samples() -> None:
    """train_gpu counts batches of one and two and extends the line: honest only if a third sample adds exactly
    what the second did (a batch-wide part such as SAM2's positional map is counted once either way)."""
    cpu = torch.device("cpu")
    of = flops_of_micro_batch("tiny", 1, cpu, torch.float32)
    model, tokenizer = build_model("tiny", cpu, torch.float32, seed=0)
    counted = count_flops(model, make_batch(model, tokenizer, 3, 1, cpu, torch.float32, seed=0))
    assert 0 < of(1)[0] < of(1)[1]
    assert of(3) == pytest.approx(counted, rel=1e-9)


def test_gpu_busy_time_counts_overlapping_kernels_once() -> None:
    assert busy_ns([(10, 20), (0, 5), (15, 30), (40, 50), (41, 45)]) == 5 + 20 + 10
    assert busy_ns([]) == 0


def test_kernel_families_follow_the_kernel_names() -> None:
    assert kernel_family("pytorch_flash::flash_bwd_kernel<...>") == "attention"
    assert kernel_family("nvjet_tst_256x128_64x4_1x2_h_bz_coopA_NNT") == "matmul"
    assert kernel_family("triton_per_fused_native_layer_norm_0") == "Triton (compiled)"
    assert kernel_family("ncclDevKernel_AllReduce_Sum_bf16_RING_LL") == "NCCL"
    assert kernel_family("void at::native::elementwise_kernel<128, 4>") == "other (eager element-wise, copies)"


@pytest.mark.slow
def test_dry_run_prints_every_preset_stage_and_rank_count(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_gpu.py"), "--dry-run"],
        env={**ENV, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "train_gpu.md").read_text()
    cells = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| tiny | ")]
    rows = [row for row in cells if len(row) == 11]  # the throughput table, not the FLOP table below it
    settings = [(r[1].strip(), r[2].strip(), r[3].strip()) for r in rows]
    assert settings == [("2", "off", "1"), ("2", "off", "2"), ("3", "off", "1"), ("3", "off", "2")]
    assert all(float(r[5]) > 0 and float(r[7]) > 0 for r in rows), table
    assert [r[10].strip() for r in rows if r[3].strip() == "1"] == ["100%", "100%"]


@pytest.mark.slow
def test_profile_times_every_part_and_phase() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_profile.py"), "--preset", "tiny", "--micro-batch", "2",
         "--steps", "2", "--warmup", "1", "--python-profile", "5"],
        env=ENV, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for part in ("ViT (frozen)", "LLM decoder (LoRA)", "SAM2 image encoder (frozen)", "SAM2 mask decoder"):
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"| {part} |"))
        assert float(line.split("|")[2]) > 0, line
    assert "forward" in done.stdout and "optimizer step" in done.stdout and "cumulative time" in done.stdout


@pytest.mark.slow
def test_encoder_gelu_times_both_variants_and_measures_their_error() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "encoder_gelu.py"), "--preset", "tiny", "--batch", "2",
         "--rounds", "1", "--iterations", "2"],
        env=ENV, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith(("| InternViT", "| SAM2"))]
    encoders = ["InternViT", "InternViT", "SAM2 image encoder", "SAM2 image encoder"]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == list(zip(encoders, ["exact", "fused"] * 2))
    assert all(float(r[2]) > 0 for r in rows)
    # fp32 on the CPU, where the fused op computes exact GELU: both variants sit at the reference's rounding.
    assert all(float(r[5]) < 1e-5 for r in rows), done.stdout
    assert int(re.search(r"(\d+) MLPs fused", done.stdout).group(1)) > 0

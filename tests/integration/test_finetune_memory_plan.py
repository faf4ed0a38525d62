"""The per-GPU memory plan (vesselseg/finetune/memory_plan.py): its arithmetic, the refusal it drives, and its
partition counts against real DeepSpeed (2 CPU ranks, gloo) for ZeRO-2 and ZeRO-3."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vesselseg.finetune.errors import TrainingError
from vesselseg.finetune.memory_plan import GIB, ParameterCount, check_fits, plan

ROOT = Path(__file__).resolve().parents[2]
# sa2va-26b with the training recipe, as benchmarks/memory_plan.py counts it on the meta device.
SA2VA_26B = ParameterCount(trained=1_951_000_000, frozen=25_611_000_000)
H100_GIB = 79.6


def test_zero2_replicates_weights_and_splits_the_optimizer_state() -> None:
    one, four = plan(SA2VA_26B, 2, 1), plan(SA2VA_26B, 2, 4)
    assert one.weights_gib == four.weights_gib == pytest.approx(2 * 27.562e9 / GIB)
    assert four.optimizer_gib == pytest.approx(one.optimizer_gib / 4)
    assert one.optimizer_gib == pytest.approx(12 * 1.951e9 / GIB)


def test_zero3_splits_the_frozen_weights_too() -> None:
    four = plan(SA2VA_26B, 3, 4)
    assert four.weight_elements == pytest.approx(27.562e9 / 4)
    assert four.gathered_elements == 1e9
    assert plan(SA2VA_26B, 3, 1).gathered_elements == 0  # one rank holds everything already


def test_26b_on_one_h100_is_refused_with_the_numbers_and_the_way_out() -> None:
    with pytest.raises(TrainingError, match=r"ZeRO-2 on 1 GPU\(s\) holds 7\d\.\d GiB .* use zero_stage 3"):
        check_fits(SA2VA_26B, 2, 1, H100_GIB)
    assert check_fits(SA2VA_26B, 2, 4, H100_GIB).activation_budget_gib(H100_GIB) > 15
    with pytest.raises(TrainingError, match="use more GPUs"):
        check_fits(SA2VA_26B, 3, 1, H100_GIB)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_partitions_match_what_deepspeed_holds(zero_stage: int) -> None:
    """The tiny preset through the finetune stage's engine set-up on 2 ranks: each rank's weights and fp32 master
    partition are the plan's (the script exits non-zero on a difference over 1 %)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(ROOT / "benchmarks" / "memory_plan.py"), "--check", "--presets", "tiny", "--zero", str(zero_stage)],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = re.findall(r"rank \d: tiny ZeRO-\d on 2: weights ([\d,]+) .*master ([\d,]+)", done.stdout)
    assert len(lines) == 2, done.stdout

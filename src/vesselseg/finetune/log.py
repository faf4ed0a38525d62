"""The training log (one JSON object per line) and the console progress of rank 0.

Step rows: `step`, `loss` and its parts `loss_lm`, `loss_bce`, `loss_dice`, `loss_cldice` (global-batch means,
before that step's update), `lr` (the rate that step applied), `grad_norm` (global, before clipping),
`step_s`, `samples_per_s`, `tokens_per_s` (non-padding input tokens), `memory_gb` (peak of the busiest rank:
GPU memory allocated on GPUs, resident set size on the CPU). Validation rows: `step`, `val_dice` (pooled over the
validation images inside their FOV, at threshold 0.5), `val_dice_tuned` and `val_threshold` (at the threshold
that maximises it), `val_images`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


class TrainLog:
    def __init__(self, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows = list(rows or [])

    @classmethod
    def read(cls, path: Path) -> TrainLog:
        return cls([json.loads(line) for line in path.read_text().splitlines() if line.strip()])

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def write(self, path: Path) -> None:
        path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))

    def steps(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "loss" in row]

    def validations(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if "val_dice" in row]


class Progress:
    """A tqdm bar with ETA on a terminal; elsewhere (pod logs) a line every `every` steps with the same facts."""

    def __init__(self, first_step: int, total: int, every: int, enabled: bool, terminal: bool) -> None:
        self.total, self.every, self.enabled = total, every, enabled
        self.first_step, self.started = first_step, time.monotonic()
        self.bar = (
            tqdm(total=total, initial=first_step - 1, unit="step", dynamic_ncols=True) if enabled and terminal else None
        )

    def step(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        facts = f"loss {row['loss']:.4f} lr {row['lr']:.2e} {row['samples_per_s']:.1f} samples/s"
        if self.bar is not None:
            self.bar.set_postfix_str(facts, refresh=False)
            self.bar.update(1)
            return
        step = row["step"]
        if step % self.every == 0 or step == self.total:
            done = step - self.first_step + 1
            eta = (time.monotonic() - self.started) / done * (self.total - step)
            log.info("step %d/%d %s, ETA %s", step, self.total, facts, _duration(eta))

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            log.info(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"

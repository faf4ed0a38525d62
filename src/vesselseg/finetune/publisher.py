"""What a training run does with the object store, as the loop sees it.

The loop never reaches the store itself: the finetune stage builds a `RunPublisher` for the run on every rank
(vesselseg.stages.finetune_rank) and hands it to `loop.train`. Only rank 0 publishes, prunes or asks what the run
published; local rank 0 of each node fetches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vesselseg.finetune.checkpoint import TrainState
from vesselseg.finetune.job import TrainResult, TrainSummary
from vesselseg.storage import InputRef


class RunPublisher(Protocol):
    def fetch_inputs(self, splits: list[str], dataset: Path, base_model: Path) -> None:
        """The dataset's `splits` (images, FOVs, ground truth, annotations) into `dataset`, the base model (if it is
        an artifact) into `base_model`."""

    def fetch(self, ref: InputRef, folder: Path) -> None:
        """A published artifact into `folder`, each file verified against its manifest."""

    def resolve(self, uri: str) -> InputRef:
        """An artifact named by URI, pinned to its manifest as it is now."""

    def finished(self) -> TrainResult | None:
        """The run's final artifact and summary, if an earlier launch published them."""

    def published_steps(self) -> list[int]:
        """The steps this run published whose artifacts are complete, oldest first."""

    def step(self, step: int) -> InputRef:
        """A published step, pinned to the manifest this run published for it."""

    def publish_step(self, folder: Path, state: TrainState) -> InputRef:
        """The checkpoint of `state.step`, from `folder`."""

    def publish_final(self, folder: Path, summary: TrainSummary) -> InputRef:
        """The run's result, from `folder`."""

    def prune(self, keep: int, protect: set[int]) -> None:
        """Removes the run's older steps, keeping the newest `keep` and `protect`."""

"""One rank of the finetune stage: the object-store side of the run, and the entry point torchrun starts per rank.

`python -m vesselseg.stages.finetune_rank --job <job.json> [--result <result.json>]` runs the stage's `TrainJob`
on one rank (torchrun starts one per GPU, or per CPU process); rank 0 writes the result where the stage reads it.
A rank some other launcher started (a Kubeflow TrainJob) comes through `finetune.run` to `train_rank` instead.

What the run publishes, under `<prefix>/<run key>/` (the files in each: vesselseg.finetune.checkpoint):
    step-<N>/           kind "training-checkpoint", every `checkpoint_every` steps and at the end
    final/              kind "training", the run's result
    checkpoints.json    the ledger: step → sha256 of the manifest this run published for it
An artifact is complete once its manifest exists (publish_dir writes it last), so a run killed while uploading
leaves only a prefix that readers ignore. A step is the run's own only if the ledger names its manifest: resuming
picks the newest complete one, pinned to that sha256, so a step folder someone else put under the run's prefix is
never loaded. The ledger entry is written after the step's files and before its manifest, so no crash leaves a
complete step the ledger does not name: dying before the entry leaves files without a manifest, dying after it an
entry for a step that is not complete; neither is ever resumed from, and both are replaced when the step is
published again or removed by pruning. Old steps are pruned only after a newer one is complete; a failed upload
raises and never touches earlier checkpoints.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from vesselseg.data.fetch import fetch_splits
from vesselseg.finetune import TrainingError
from vesselseg.finetune.base_model import fetch_base_model
from vesselseg.finetune.checkpoint import FINAL_KIND, STAGE, STEP_KIND, SUMMARY_FILE, TrainState
from vesselseg.finetune.job import TrainJob, TrainResult, TrainSummary
from vesselseg.finetune.launch import die_with_parent, log_as_rank, process_rank, quiet_libraries
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, publish_dir, resolve
from vesselseg.storage.artifact import MANIFEST

log = logging.getLogger(__name__)

LEDGER = "checkpoints.json"
_STEP = re.compile(r"step-(\d+)/")


class StorePublisher:
    """The run's `RunPublisher` (vesselseg.finetune.publisher): the object-store folder `<prefix>/<run key>/`."""

    def __init__(self, store: ObjectStore, job: TrainJob) -> None:
        self.store, self.job = store, job
        self.root = f"{job.prefix.strip('/')}/{job.run_key}/"
        self.final_key = f"{self.root}final/"

    def step_key(self, step: int) -> str:
        return f"{self.root}step-{step}/"

    # ----- inputs -----
    def fetch_inputs(self, splits: list[str], dataset: Path, base_model: Path) -> None:
        fetch_splits(self.store, self.job.dataset, dataset, splits, splits)
        fetch_dir(self.store, self.job.dataset, dataset, only=[f"annotations/{split}.json" for split in splits])
        fetch_base_model(self.job.base_model, self.store, base_model)

    def fetch(self, ref: InputRef, folder: Path) -> None:
        fetch_dir(self.store, ref, folder)

    def resolve(self, uri: str) -> InputRef:
        return resolve(self.store, uri)

    # ----- what the run published -----
    def finished(self) -> TrainResult | None:
        if not self.store.exists(self.final_key + MANIFEST):
            return None
        summary = TrainSummary.model_validate_json(self.store.get_bytes(self.final_key + SUMMARY_FILE))
        final = resolve(self.store, self.store.uri(self.final_key))
        return TrainResult(training=final, summary=summary, resumed_from_step=None)

    def _step_prefixes(self) -> dict[int, bool]:
        """Step number → whether its artifact is complete (has a manifest)."""
        steps: dict[int, bool] = {}
        for key in self.store.list(self.root):
            if match := _STEP.match(key[len(self.root) :]):
                step = int(match.group(1))
                steps[step] = steps.get(step, False) or key.endswith("/" + MANIFEST)
        return steps

    def _ledger(self) -> dict[int, str]:
        """Step → manifest sha256 of what this run published (empty before its first checkpoint)."""
        key = self.root + LEDGER
        if not self.store.exists(key):
            return {}
        try:
            return {int(step): str(sha) for step, sha in json.loads(self.store.get_bytes(key)).items()}
        except (ValueError, AttributeError) as err:
            raise TrainingError(
                f"{self.store.uri(key)} is not a checkpoint ledger ({err}); resume: never starts fresh"
            ) from err

    def _write_ledger(self, ledger: dict[int, str]) -> None:
        blob = json.dumps({str(step): ledger[step] for step in sorted(ledger)}, indent=2).encode()
        self.store.put_bytes(self.root + LEDGER, blob, content_type="application/json")

    def published_steps(self) -> list[int]:
        ledger = self._ledger()
        complete = sorted(step for step, done in self._step_prefixes().items() if done)
        foreign = [step for step in complete if step not in ledger]
        if foreign:
            log.warning("ignoring step checkpoints this run did not publish under %s: %s", self.store.uri(self.root),
                        foreign)  # fmt: skip
        return [step for step in complete if step in ledger]

    def step(self, step: int) -> InputRef:
        """Pinned to the ledger's sha256: a manifest changed since is refused when fetched."""
        sha = self._ledger().get(step)
        if sha is None:
            raise TrainingError(f"step {step} of {self.store.uri(self.root)} was not published by this run")
        return InputRef(uri=self.store.uri(self.step_key(step)), manifest_sha256=sha)

    # ----- publishing -----
    def _publish(
        self,
        folder: Path,
        key: str,
        kind: str,
        summary: dict[str, Any],
        before_visible: Callable[[InputRef], None] | None = None,
    ) -> InputRef:
        inputs = {"dataset": self.job.dataset}
        if self.job.base_model is not None:
            inputs["base_model"] = self.job.base_model
        ref, _ = publish_dir(self.store, folder, key, kind=kind, stage=STAGE, config=self.job.stage_config,
                             inputs=inputs, summary=summary, before_visible=before_visible)  # fmt: skip
        return ref

    def publish_step(self, folder: Path, state: TrainState) -> InputRef:
        def own(ref: InputRef) -> None:  # before the manifest exists: see the module's docstring
            self._write_ledger({**self._ledger(), state.step: ref.manifest_sha256})

        summary = {"step": state.step, "run_key": self.job.run_key, "best_step": state.best_step,
                   "best_val_dice": state.best_val_dice}  # fmt: skip
        return self._publish(folder, self.step_key(state.step), STEP_KIND, summary, before_visible=own)

    def publish_final(self, folder: Path, summary: TrainSummary) -> InputRef:
        return self._publish(folder, self.final_key, FINAL_KIND, summary.model_dump(mode="json", exclude={"config"}))

    def prune(self, keep: int, protect: set[int]) -> None:
        """Keeps the newest `keep` steps this run published and `protect`; removes its older ones and abandoned uploads.

        A manifest goes first, so a step being removed stops looking complete before any file disappears.
        """
        steps, ledger = self._step_prefixes(), self._ledger()
        kept = set(sorted(step for step in ledger if steps.get(step))[-keep:]) | protect
        newest = max(kept, default=0)
        for step, complete in sorted(steps.items()):
            # A complete step this run did not publish is not its own to remove.
            if step in kept or (complete and step not in ledger) or (not complete and step > newest):
                continue
            key = self.step_key(step)
            self.store.delete([key + MANIFEST])
            self.store.delete_prefix(key)
            ledger.pop(step, None)
            log.info("removed checkpoint %s", self.store.uri(key))
        self._write_ledger(ledger)


def train_rank(job: TrainJob, store: ObjectStore) -> TrainResult:
    """Trains `job` on this rank, publishing through `store`; every rank returns the same result."""
    from vesselseg.finetune.loop import train

    return train(job, StorePublisher(store, job))


@record
def main(argv: list[str] | None = None) -> int:
    """`record` hands a failing rank's traceback to torchrun's error summary."""
    parser = argparse.ArgumentParser(prog="python -m vesselseg.stages.finetune_rank")
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)
    log_as_rank()
    quiet_libraries()
    result = train_rank(TrainJob.model_validate_json(args.job.read_text()), ObjectStore())
    if process_rank() == 0 and args.result is not None:
        args.result.write_text(result.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

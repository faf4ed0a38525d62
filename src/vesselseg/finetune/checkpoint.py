"""Checkpoints as published artifacts: one object-store folder per run, one artifact per saved step.

    <prefix>/<run key>/step-<N>/    kind "training-checkpoint", every `checkpoint_every` steps and at the end
    <prefix>/<run key>/final/       kind "training", the run's result
    <prefix>/<run key>/checkpoints.json   step → sha256 of the manifest this run published for it
each holding
    model/              Sa2VAConfig.save_pretrained + Sa2VAProcessor.save_pretrained (config, tokenizer)
    checkpoint/         DeepSpeed's engine.save_checkpoint(checkpoint/, tag="global_step<N>"), with its `latest`
    train_log.jsonl     the log up to step N
    state.json          (steps) where the run stands: step, best validation, world size, …
    train_summary.json  (final) the final numbers
A step artifact is complete once its manifest exists (publish_dir writes it last), so a run killed while
uploading leaves only a prefix that readers ignore, and resuming picks the newest complete one that this run
published: its manifest must still hash to what `checkpoints.json` recorded when the run published it, so a step
folder someone else put under the run's prefix is never loaded. Old steps are pruned only after a newer one is
complete; a failed upload raises and never touches earlier checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from vesselseg.finetune.base_model import config_differences, config_digest, config_fingerprint
from vesselseg.finetune.errors import TrainingError
from vesselseg.model import Sa2VAConfig, Sa2VAProcessor
from vesselseg.storage import InputRef, ObjectStore, publish_dir, resolve
from vesselseg.storage.artifact import MANIFEST

log = logging.getLogger(__name__)

STAGE = "finetune"
STEP_KIND, FINAL_KIND = "training-checkpoint", "training"
MODEL_DIR, CHECKPOINT_DIR, LOG_FILE, STATE_FILE, SUMMARY_FILE = (
    "model", "checkpoint", "train_log.jsonl", "state.json", "train_summary.json",
)  # fmt: skip
_STEP = re.compile(r"step-(\d+)/")
LEDGER = "checkpoints.json"


def tag(step: int) -> str:
    """DeepSpeed's checkpoint tag for a step, as its `latest` file names it."""
    return f"global_step{step}"


class TrainState(BaseModel):
    """Where a run stands at a checkpoint; what resuming needs beyond DeepSpeed's own state."""

    model_config = ConfigDict(extra="forbid")

    step: int
    run_key: str
    model_digest: str
    world_size: int
    zero_stage: int
    precision: str
    best_step: int | None = None
    best_val_dice: float | None = None
    train_s: float = 0.0  # training wall time summed over every launch of the run
    resumed_from: list[int] = []


def write_model_folder(config: Sa2VAConfig, processor: Sa2VAProcessor, folder: Path) -> None:
    """Config and tokenizer: with a checkpoint that holds every parameter, enough to rebuild the module."""
    config.save_pretrained(folder)
    processor.save_pretrained(folder)


class RunArtifacts:
    """The object-store folder `<prefix>/<run key>/` of one run."""

    def __init__(self, store: ObjectStore, prefix: str, run_key: str) -> None:
        self.store = store
        self.root = f"{prefix.strip('/')}/{run_key}/"

    def step_key(self, step: int) -> str:
        return f"{self.root}step-{step}/"

    @property
    def final_key(self) -> str:
        return f"{self.root}final/"

    def _step_prefixes(self) -> dict[int, bool]:
        """Step number → whether its artifact is complete (has a manifest)."""
        steps: dict[int, bool] = {}
        for key in self.store.list(self.root):
            if match := _STEP.match(key[len(self.root) :]):
                step = int(match.group(1))
                steps[step] = steps.get(step, False) or key.endswith("/" + MANIFEST)
        return steps

    def complete_steps(self) -> list[int]:
        return sorted(step for step, complete in self._step_prefixes().items() if complete)

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
        """Complete steps whose manifest is still the one this run published, oldest first."""
        ledger, complete = self._ledger(), self.complete_steps()
        foreign = [step for step in complete if step not in ledger]
        if foreign:
            log.warning("ignoring step checkpoints this run did not publish under %s: %s", self.store.uri(self.root),
                        foreign)  # fmt: skip
        return [step for step in complete if step in ledger]

    def published_step_ref(self, step: int) -> InputRef:
        """The step artifact pinned to the manifest this run published: a manifest changed since is refused."""
        sha = self._ledger().get(step)
        if sha is None:
            raise TrainingError(f"step {step} of {self.store.uri(self.root)} was not published by this run")
        return InputRef(uri=self.store.uri(self.step_key(step)), manifest_sha256=sha)

    def final(self) -> InputRef | None:
        if not self.store.exists(self.final_key + MANIFEST):
            return None
        return resolve(self.store, self.store.uri(self.final_key))

    def publish(
        self,
        local: Path,
        key: str,
        kind: str,
        stage_config: dict[str, Any],
        inputs: dict[str, InputRef],
        summary: dict[str, Any],
    ) -> InputRef:
        ref, _ = publish_dir(
            self.store, local, key, kind=kind, stage=STAGE, config=stage_config, inputs=inputs, summary=summary
        )
        if match := _STEP.fullmatch(key[len(self.root) :]):
            self._write_ledger({**self._ledger(), int(match.group(1)): ref.manifest_sha256})
        return ref

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


def check_compatible(
    state: TrainState, where: str, model: Sa2VAConfig, model_folder: Path, world_size: int, zero_stage: int
) -> None:
    """Refuses a checkpoint written for another model, world size or ZeRO stage, naming what differs."""
    if state.model_digest != config_digest(model):
        found = Sa2VAConfig.from_pretrained(model_folder)
        differences = config_differences(config_fingerprint(model), config_fingerprint(found))
        raise TrainingError(
            f"checkpoint {where} does not match the model being trained: "
            + ("; ".join(differences[:8]) or "the configs differ")
            + (" …" if len(differences) > 8 else "")
        )
    if state.world_size != world_size or state.zero_stage != zero_stage:
        raise TrainingError(
            f"checkpoint {where} was written by {state.world_size} ranks with ZeRO stage {state.zero_stage}; "
            f"this run has {world_size} ranks and stage {zero_stage}. Resume with the same layout, or start "
            "fresh with resume: never"
        )


def read_state(folder: Path) -> TrainState:
    path = folder / STATE_FILE
    if not path.is_file():
        raise TrainingError(f"{folder} holds no {STATE_FILE}: not a step checkpoint of the finetune stage")
    return TrainState.model_validate_json(path.read_text())


def assemble(source: Path, target: Path) -> None:
    """Puts a step folder's model/ and checkpoint/ into `target`, the final artifact's staging folder.

    Hard links where the file system allows: a large model's checkpoint is not copied a second time.
    """
    for name in (MODEL_DIR, CHECKPOINT_DIR):
        shutil.copytree(source / name, target / name, dirs_exist_ok=True, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)

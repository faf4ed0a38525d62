"""The finetune stage's publisher (vesselseg.stages.finetune_rank.StorePublisher) on the real object store.

A run killed at any write while it publishes a step must never leave a complete step that its ledger does not
name (a step the run could neither resume from nor prune), and its next launch must publish that step again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vesselseg.finetune import FinetuneConfig
from vesselseg.finetune.checkpoint import TrainState
from vesselseg.finetune.job import TrainJob
from vesselseg.stages.finetune_rank import LEDGER, StorePublisher
from vesselseg.storage import InputRef, ObjectStore, StoreSettings


class Killed(Exception):
    pass


class StoreKilledAtWrite(ObjectStore):
    """The real store, in a process that dies (raises `Killed`) before its `n`-th small write (ledger, manifest)."""

    def __init__(self, settings: StoreSettings, n: int) -> None:
        super().__init__(settings)
        self.writes_left = n

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.writes_left == 0:
            raise Killed(key)
        self.writes_left -= 1
        super().put_bytes(key, data, content_type)


def _job(prefix: str) -> TrainJob:
    return TrainJob(
        config=FinetuneConfig(),
        dataset=InputRef(uri=f"s3://vesselseg/{prefix}/dataset/", manifest_sha256="0" * 64),
        base_model=None,
        prefix=prefix,
        run_key="run",
        precision="fp32",
        workdir="unused",
        stage_config={},
        world_size=1,
    )


def _step_folder(tmp_path: Path, step: int) -> Path:
    folder = tmp_path / f"step-{step}"
    (folder / "checkpoint").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint" / "latest").write_text(f"global_step{step}")
    (folder / "state.json").write_text(json.dumps({"step": step}))
    return folder


def _state(step: int) -> TrainState:
    return TrainState(step=step, run_key="run", model_digest="d", world_size=1, zero_stage=2, precision="fp32")


def _unowned_complete_steps(store: ObjectStore, root: str) -> list[int]:
    """Complete steps (with a manifest) whose manifest sha256 the ledger does not record."""
    ledger = json.loads(store.get_bytes(root + LEDGER)) if store.exists(root + LEDGER) else {}
    unowned = []
    for key in store.list(root):
        if key.endswith("/manifest.json") and "/step-" in key:
            step = key.removeprefix(root + "step-").split("/")[0]
            if ledger.get(step) != hashlib.sha256(store.get_bytes(key)).hexdigest():
                unowned.append(int(step))
    return unowned


@pytest.mark.parametrize("dies_before_write", [0, 1])
def test_a_run_killed_while_publishing_a_step_leaves_no_step_it_does_not_own(
    store: ObjectStore, store_settings: StoreSettings, prefix: str, tmp_path: Path, dies_before_write: int
) -> None:
    job = _job(prefix)
    root = f"{prefix}/run/"
    StorePublisher(store, job).publish_step(_step_folder(tmp_path, 2), _state(2))
    # Publishing a step writes two small objects, the ledger and the manifest; the run dies before one of them.
    killed = StorePublisher(StoreKilledAtWrite(store_settings, dies_before_write), job)
    with pytest.raises(Killed):
        killed.publish_step(_step_folder(tmp_path, 4), _state(4))
    assert _unowned_complete_steps(store, root) == []

    relaunched = StorePublisher(store, job)
    assert relaunched.published_steps() == [2]
    ref = relaunched.publish_step(_step_folder(tmp_path, 4), _state(4))
    assert relaunched.published_steps() == [2, 4] and relaunched.step(4) == ref
    relaunched.prune(keep=1, protect=set())
    assert relaunched.published_steps() == [4] and json.loads(store.get_bytes(root + LEDGER)) == {
        "4": ref.manifest_sha256
    }
    assert not [key for key in store.list(root) if "/step-2/" in key]

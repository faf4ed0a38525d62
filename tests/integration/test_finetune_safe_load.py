"""DeepSpeed checkpoints are read without running code from them (issue 21, item 2).

Real ZeRO-2/3 checkpoints from 2-rank CPU runs (gloo) must load with only tensors and the allow-listed DeepSpeed
types; a rank file whose pickle would run a command (it would create a marker file) is refused by conversion and by
resume, and the command never runs. Resume `auto` takes only steps whose manifest the run itself published.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch

from vesselseg.convert import DeepSpeedInput
from vesselseg.convert.sample_checkpoint import SampleJob, write_sample_checkpoints
from vesselseg.finetune import TrainingError
from vesselseg.finetune import checkpoint as ckpt
from vesselseg.finetune.safe_load import UnsafeCheckpointError, deepspeed_globals, load, pickle_enums_by_value
from vesselseg.stages import data_prep, finetune, finetune_rank
from vesselseg.storage import ObjectStore, fetch_dir, publish_dir

pytestmark = pytest.mark.slow

SESSION = f"tests/safe-load/{uuid.uuid4().hex[:8]}"


class RunsACommand:
    """Unpickling this runs `touch <marker>`: what a crafted rank file can do under weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _poison(rank_file: Path, marker: Path) -> None:
    """Adds the command to a real rank file, which stays a loadable torch archive otherwise."""
    state = torch.load(rank_file, weights_only=False)
    state["payload"] = RunsACommand(marker)
    torch.save(state, rank_file)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("deepspeed")
    jobs = [SampleJob(out=root / f"z{stage}", zero_stage=stage, steps=1, probe=False) for stage in (2, 3)]
    write_sample_checkpoints(jobs, log=root / "deepspeed.log")
    return {f"z{stage}": root / f"z{stage}" for stage in (2, 3)}


def _qualname(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def test_checkpoints_written_on_any_python_load_weights_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian bookworm's Python 3.11.2 (the images') pickles an enum member as `getattr(cls, name)`, which the
    weights-only loader refuses and must keep refusing; engines pickle ZeroStageEnum by value instead."""
    from deepspeed.runtime.zero.config import ZeroStageEnum

    monkeypatch.setattr(ZeroStageEnum, "__reduce_ex__", lambda self, protocol: (getattr, (type(self), self.name)))
    torch.save({"zero_stage": ZeroStageEnum.gradients}, tmp_path / "getattr.pt")
    with pytest.raises(UnsafeCheckpointError, match=r"\(builtins\.getattr\)"):
        load(tmp_path / "getattr.pt", "opt-in")
    pickle_enums_by_value()
    torch.save({"zero_stage": ZeroStageEnum.gradients}, tmp_path / "by-value.pt")
    assert load(tmp_path / "by-value.pt", "opt-in") == {"zero_stage": ZeroStageEnum.gradients}


def test_allow_list_is_what_real_zero_checkpoints_hold(runs: dict[str, Path]) -> None:
    allowed = {_qualname(g) for g in deepspeed_globals()}
    needed: set[str] = set()
    for run in runs.values():
        files = sorted((run / "checkpoint").glob("global_step1/*.pt"))
        assert len(files) >= 3
        for path in files:
            needed |= set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
            load(path, "no opt-in in this test", mmap=True)
    assert needed == allowed, "the allow-list should be exactly what DeepSpeed's checkpoints need"


@pytest.mark.parametrize("name", ["z2", "z3"])
def test_conversion_refuses_a_rank_file_that_would_run_a_command(
    runs: dict[str, Path], tmp_path: Path, name: str
) -> None:
    run = tmp_path / name
    shutil.copytree(runs[name], run)
    DeepSpeedInput(run).open()  # the real checkpoint converts under the allow-list
    marker = tmp_path / "marker"
    rank_file = run / "checkpoint" / "global_step1" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    _poison(rank_file, marker)
    with pytest.raises(UnsafeCheckpointError, match=rf"{rank_file}: refused to unpickle .*posix\.system.*trust_pickle"):
        DeepSpeedInput(run).open()
    assert not marker.exists(), "the rank file's command ran"
    # The poisoned file is live: an unguarded load runs the command.
    torch.load(rank_file, weights_only=False)
    assert marker.exists()


@pytest.fixture(scope="module")
def dataset(store_settings):
    config = {"data": {"synthetic": {"count": 6, "size": 96, "seed": 4}}, "prefix": f"{SESSION}/datasets"}
    return data_prep.run(data_prep.Config.model_validate(config), ObjectStore(store_settings)).dataset


def _config(dataset, prefix: str, **training) -> finetune.Config:
    training = {"base_model": "preset:tiny", "steps": 2, "checkpoint_every": 1, "val_every": None,
                "global_batch_size": 2, "micro_batch_size": 2, "cpu_processes": 1, **training}  # fmt: skip
    return finetune.Config.model_validate({"dataset": dataset.model_dump(), "prefix": prefix, "training": training})


def _plant_poisoned_step(store: ObjectStore, root: str, source_step: int, step: int, marker: Path, tmp: Path) -> str:
    """A copy of a real step checkpoint under the run's prefix with one rank file poisoned and a valid manifest."""
    folder = tmp / f"step-{step}"
    fetch_dir(store, store.uri(f"{root}step-{source_step}/"), folder)
    (folder / "manifest.json").unlink()
    rank_files = sorted((folder / ckpt.CHECKPOINT_DIR).glob("*/*_optim_states.pt"))
    _poison(rank_files[0], marker)
    publish_dir(store, folder, f"{root}step-{step}/", kind=ckpt.STEP_KIND, stage=ckpt.STAGE, config={})
    return store.uri(f"{root}step-{step}/")


def test_resume_takes_only_steps_this_run_published_and_never_runs_a_pickle(
    dataset, store: ObjectStore, prefix: str, tmp_path: Path
) -> None:
    config = _config(dataset, prefix)
    first = finetune.run(config, store)
    root = f"{prefix}/{first.summary.run_key}/"
    store.delete([root + "final/manifest.json"])  # as if the run died before publishing its result
    marker = tmp_path / "marker"
    planted = _plant_poisoned_step(store, root, 2, 5, marker, tmp_path)

    resumed = finetune.run(config, store)  # resume: auto
    assert not marker.exists(), "the planted step was loaded and its rank file's command ran"
    assert resumed.resumed_from_step == 2
    assert store.exists(f"{store.key_of(planted)}manifest.json"), "a step the run did not publish was removed"

    # Named explicitly, the planted step gets as far as DeepSpeed's own load, which must refuse the rank file.
    store.delete([root + "final/manifest.json"])
    with pytest.raises(TrainingError, match=r"UnsafeCheckpointError: .*optim_states\.pt: refused to unpickle"):
        finetune.run(_config(dataset, prefix, resume=planted), store)
    assert not marker.exists(), "the rank file's command ran"
    assert sorted(json.loads(store.get_bytes(root + finetune_rank.LEDGER))) == ["1", "2"]

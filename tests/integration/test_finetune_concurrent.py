"""Two identical fine-tuning runs at once on one machine (one shared work volume) must both finish (issue 21, item 5).

Their work folders used to be named by the run alone, so each launch deleted the other's dataset, checkpoints and
result file. Real torchrun, real DeepSpeed on gloo, the real object store.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vesselseg.stages import data_prep, finetune
from vesselseg.storage import ObjectStore
from vesselseg.storage.settings import work_dir

pytestmark = pytest.mark.slow

_RUN = (
    "import sys; from vesselseg.stages import finetune; finetune.run(finetune.Config.model_validate_json(sys.argv[1]))"
)


@pytest.fixture(scope="module")
def dataset(store_settings):
    prefix = f"tests/concurrent/{uuid.uuid4().hex[:8]}/datasets"
    config = {"data": {"synthetic": {"count": 6, "size": 96, "seed": 5}}, "prefix": prefix}
    return data_prep.run(data_prep.Config.model_validate(config), ObjectStore(store_settings)).dataset


def test_two_identical_runs_at_once_both_finish(dataset, store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    training = {"base_model": "preset:tiny", "steps": 3, "checkpoint_every": 1, "val_every": None,
                "global_batch_size": 2, "micro_batch_size": 2, "cpu_processes": 1}  # fmt: skip
    config = finetune.Config.model_validate({"dataset": dataset.model_dump(), "prefix": prefix, "training": training})
    run_key = finetune.prepare(config, store).run_key
    name = finetune.run_name(prefix, run_key)
    scratch = work_dir() / "scratch"
    # What a launch SIGKILLed mid-run leaves: its folder and its lock file, the lock no longer held by anyone.
    abandoned = scratch / f"{name}-0123456789ab"
    (abandoned / "dataset").mkdir(parents=True)
    Path(f"{abandoned}.lock").touch()

    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    runs = [
        subprocess.Popen([sys.executable, "-c", _RUN, config.model_dump_json()], stdout=log.open("w"),
                         stderr=subprocess.STDOUT)
        for log in logs
    ]  # fmt: skip
    codes = [run.wait(timeout=1200) for run in runs]
    assert codes == [0, 0], "\n\n".join(log.read_text()[-3000:] for log in logs)
    leftovers = sorted(scratch.glob(f"{name}-*"))
    assert not leftovers, f"work folders left behind: {leftovers}"
    assert store.exists(f"{prefix}/{run_key}/final/manifest.json")

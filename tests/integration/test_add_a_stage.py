"""Adding a stage is one stage module and one line in pipeline.py (docs/architecture.md, "Adding a stage").

A throwaway `calibrate` stage module is put on the stages package's path; with one more line in a copy of
pipeline.py, the compiled pipeline has its task and its `calibrate_overrides` run parameter, the CLI its verb and
the run-parameter check its config. Integration tier: it compiles the whole pipeline with kfp.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import vesselseg.stages as stages
from vesselseg.cli import build_parser
from vesselseg.cluster.platform import read_ir
from vesselseg.config import ConfigError
from vesselseg.local_run import compile_pipeline
from vesselseg.run_parameters import check_overrides

ROOT = Path(__file__).resolve().parents[2]

CALIBRATE = """
from pydantic import BaseModel, ConfigDict

from vesselseg.config import ConfigModel
from vesselseg.stages.contract import Input, Output, Pointer, Stage
from vesselseg.storage import InputRef


class Config(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    dataset: InputRef | str
    predictions: InputRef | str
    temperatures: list[float] = [0.5, 1.0, 2.0]


class Result(BaseModel):
    calibration: InputRef


def run(config, store=None):
    raise NotImplementedError("compiled, never run")


def emit(result, store):
    return {"calibration": Pointer(result.calibration)}


STAGE = Stage(
    name="calibrate",
    description="Fit a temperature on the validation predictions.",
    config=Config,
    result=Result,
    run=run,
    emit=emit,
    inputs=(Input("dataset", "Dataset", "dataset"), Input("predictions", "Artifact", "predictions")),
    outputs=(Output("calibration", "Artifact"),),
)
"""
LINE = '    stage("calibrate", dataset=dataset, predictions=predicted.outputs["predictions"])\n'


@pytest.fixture
def calibrate_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    folder = tmp_path / "more_stages"
    folder.mkdir()
    (folder / "calibrate.py").write_text(CALIBRATE)
    monkeypatch.setattr(stages, "__path__", [*stages.__path__, str(folder)])
    monkeypatch.setattr(stages, "cache_file", lambda: tmp_path / "contracts.json")
    monkeypatch.setattr(stages, "_loaded", {})
    yield
    sys.modules.pop("vesselseg.stages.calibrate", None)


def test_a_stage_module_and_one_pipeline_line_make_a_task(tmp_path: Path, calibrate_module: None) -> None:
    source = (ROOT / "pipeline.py").read_text()
    (tmp_path / "components").symlink_to(ROOT / "components")
    # Without its line the pipeline refuses to compile: calibrate_overrides would be ignored.
    (tmp_path / "pipeline.py").write_text(source)
    with pytest.raises(ConfigError, match=r"stage 'calibrate' has no task .*calibrate_overrides would be ignored"):
        compile_pipeline(tmp_path / "pipeline.py", tmp_path / "without.yaml")

    anchor = "    return Outputs("
    assert source.count(anchor) == 1
    (tmp_path / "pipeline.py").write_text(source.replace(anchor, LINE + anchor))
    spec, _ = read_ir(compile_pipeline(tmp_path / "pipeline.py", tmp_path / "pipeline.yaml"))
    assert "calibrate_overrides" in spec["root"]["inputDefinitions"]["parameters"]
    task = spec["root"]["dag"]["tasks"]["calibrate"]
    overrides = task["inputs"]["parameters"]["overrides"]["componentInputParameter"]
    assert overrides == "calibrate_overrides"
    artifacts = task["inputs"]["artifacts"]
    assert artifacts["predictions"]["taskOutputArtifact"] == {
        "outputArtifactKey": "predictions",
        "producerTask": "infer",
    }
    assert "exec-calibrate" in spec["deploymentSpec"]["executors"]

    assert build_parser().parse_args(["calibrate", "--set", "temperatures=[1.0]"]).command == "calibrate"
    with pytest.raises(ConfigError, match=r"calibrate_overrides\.temperaturez: stage 'calibrate'.*temperatures"):
        check_overrides("calibrate_overrides", {"temperaturez": [1.0]})

"""Config loading (YAML + --set), the command line, and pipeline compilation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from vesselseg.cli import main
from vesselseg.config import ConfigError, load_config
from vesselseg.local_run import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 4
    name: str = "x"


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: Inner = Inner()
    flags: list[str] = []


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"inner": {"size": 8, "name": "file"}}))
    config = load_config(Outer, path, ["inner.size=16", "flags=[a, b]"])
    assert config.inner.size == 16 and config.inner.name == "file" and config.flags == ["a", "b"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["inner.size=big"], r"inner\.size.*'big'"),
        (["inner.colour=red"], r"inner\.colour"),
        (["noequals"], "key=value"),
        (["inner.size.deep=1"], r"inner\.size: Input should be a valid integer"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, overrides)


def test_bad_config_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("inner: [unclosed")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_cli_reports_errors_without_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["data-prep", "--set", "data.split.val_fraction=lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "val_fraction" in err and "Traceback" not in err


def test_compiled_pipeline_loads_back(tmp_path: Path) -> None:
    from kfp.components import load_component_from_file

    params = {"seed": 3, "finetune_overrides": {"training": {"steps": 5}}}
    out = compile_pipeline(ROOT / "pipeline.py", tmp_path / "pipeline.yaml", params)
    spec = yaml.safe_load(out.read_text())
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert defaults["seed"]["defaultValue"] == 3 and defaults["infer_overrides"]["defaultValue"] == {}
    assert defaults["finetune_overrides"]["defaultValue"] == {"training": {"steps": 5}}
    assert spec["pipelineInfo"]["name"] == "vesselseg"
    executors = spec["deploymentSpec"]["executors"]
    assert any("data_prep" in json.dumps(e) for e in executors.values())
    loaded = load_component_from_file(str(out))
    assert loaded.name == "vesselseg"
    assert set(loaded.component_spec.inputs) >= {"dataset_source", "seed"}

"""Each stage declares its contract once (vesselseg.stages.contract): the stages are the modules that declare
`STAGE`, and the contracts as data (what the components, the CLI and the run-parameter check read without importing
torch) are derived from them, again whenever the package's source changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vesselseg.stages as stages
from components import component, pipeline_stages
from vesselseg.stages import contracts_data, load_contracts, stage_contract, stage_names

PIPELINE_STAGES = ["baseline", "convert", "data-prep", "evaluate", "finetune", "infer", "promote", "visualize"]


def test_the_stages_are_the_modules_that_declare_one() -> None:
    assert sorted(stage_names()) == sorted([*PIPELINE_STAGES, "import-official"])
    assert sorted(pipeline_stages()) == PIPELINE_STAGES
    with pytest.raises(KeyError, match=r"unknown stage 'inputs'; stages: baseline, convert"):
        stage_contract("inputs")  # a helper module of the package, not a stage


def test_the_contracts_are_derived_again_when_the_source_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "contracts.json"
    monkeypatch.setattr(stages, "cache_file", lambda: cache)
    monkeypatch.setattr(stages, "_loaded", {})
    current = json.loads(json.dumps(contracts_data(), sort_keys=True))
    assert load_contracts() == current and json.loads(cache.read_text())["contracts"] == current
    # Kept contracts of other source (a stage's config edited since): not read.
    cache.write_text(json.dumps({"fingerprint": "0" * 64, "contracts": {"baseline": {}}}))
    monkeypatch.setattr(stages, "_loaded", {})
    assert load_contracts() == current
    # The same source: read back, no stage derived again.
    monkeypatch.setattr(stages, "_loaded", {})
    monkeypatch.setattr(stages, "contracts_data", lambda: pytest.fail("derived although the source is unchanged"))
    assert load_contracts() == current


def test_each_component_has_its_stage_name_and_declared_interface() -> None:
    for name in pipeline_stages():
        contract = load_contracts()[name]
        spec = component(name).component_spec
        assert spec.name == name
        declared = {i["name"] for i in contract["inputs"]} | {p["name"] for p in contract["parameters"]}
        assert set(spec.inputs) == declared | {"overrides"}, name
        assert set(spec.outputs or {}) == {o["name"] for o in contract["outputs"]}, name

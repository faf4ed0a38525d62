"""Each stage declares its contract once (vesselseg.stages.contract); `contracts.json` is that declaration as data,
read by the components and the run-parameter check, and must be what the stage modules say."""

from __future__ import annotations

import json

from components import component
from vesselseg.stages import CONTRACTS_FILE, STAGES, contracts_data, load_contracts


def test_contracts_json_is_what_the_stage_modules_declare() -> None:
    current = json.loads(json.dumps(contracts_data()))
    assert load_contracts() == current, (
        f"a stage's contract changed: run `python -m vesselseg.stages` ({CONTRACTS_FILE})"
    )


def test_each_component_has_its_stage_name_and_declared_interface() -> None:
    for name, contract in load_contracts().items():
        if not contract["outputs"]:  # run from the command line only (import-official)
            continue
        spec = component(name).component_spec
        assert spec.name == name and name in STAGES
        declared = {i["name"] for i in contract["inputs"]} | {p["name"] for p in contract["parameters"]}
        assert set(spec.inputs) == declared | {"overrides"}, name
        assert set(spec.outputs or {}) == {o["name"] for o in contract["outputs"]}, name

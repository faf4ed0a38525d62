"""One module per pipeline stage, each exposing `Config`, `Result`, `run(config) -> Result` and `STAGE`, its
contract (vesselseg.stages.contract).

The registry maps the stage's name (CLI verb, KFP component, pipeline task) to the module; modules are imported
only when a stage is asked for, because their libraries (torch, transformers) are heavy. For what must answer
at once (the pipeline's components, the check of run parameters) the contracts are also kept as data in
`contracts.json`, written by `python -m vesselseg.stages` and compared with the code by
tests/unit/test_stage_contract.py.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from vesselseg.stages.contract import Stage

STAGES: dict[str, str] = {
    "data-prep": "vesselseg.stages.data_prep",
    "baseline": "vesselseg.stages.baseline",
    "finetune": "vesselseg.stages.finetune",
    "convert": "vesselseg.stages.convert",
    "infer": "vesselseg.stages.infer",
    "evaluate": "vesselseg.stages.evaluate",
    "visualize": "vesselseg.stages.visualize",
    "promote": "vesselseg.stages.promote",
    "import-official": "vesselseg.stages.import_official",
}


def stage_module(name: str) -> ModuleType:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    return importlib.import_module(STAGES[name])


def stage_contract(name: str) -> Stage:
    contract = stage_module(name).STAGE
    assert isinstance(contract, Stage) and contract.name == name, f"{STAGES[name]}.STAGE must be the {name!r} stage"
    return contract


CONTRACTS_FILE = Path(__file__).with_name("contracts.json")
# What the check of run parameters reads of a config's JSON schema: its shape. Descriptions, defaults and bounds
# are left out, so editing them does not make contracts.json stale (the task validates them with pydantic).
SHAPE = {"type", "properties", "additionalProperties", "$ref", "$defs", "anyOf", "oneOf", "allOf", "items"}


def _shape(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_shape(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    shaped = {}
    for key, value in schema.items():
        if key in ("properties", "$defs"):  # keyed by field and model names
            shaped[key] = {name: _shape(sub) for name, sub in value.items()}
        elif key in SHAPE:
            shaped[key] = _shape(value)
    return shaped


def contracts_data() -> dict[str, Any]:
    """Every stage's contract as data, with its config's JSON schema (imports every stage: slow)."""
    data = {}
    for name in STAGES:
        contract = stage_contract(name)
        data[name] = {
            "description": contract.description,
            "function_name": contract.function_name,
            "overrides_parameter": contract.overrides_parameter,
            "gpu": contract.gpu,
            "inputs": [asdict(i) for i in contract.inputs],
            "parameters": [asdict(p) | {"type": p.type.__name__} for p in contract.parameters],
            "outputs": [asdict(o) for o in contract.outputs],
            "wired": list(contract.wired),
            "config_schema": _shape(contract.config.model_json_schema()),
        }
    return data


def load_contracts() -> dict[str, Any]:
    """The contracts as `contracts.json` holds them (no stage imported)."""
    return json.loads(CONTRACTS_FILE.read_text())

"""One module per pipeline stage, each exposing `Config`, `Result`, `run(config) -> Result` and `STAGE`, its
contract (vesselseg.stages.contract).

The stages are the modules of this package that declare `STAGE`; a stage `data-prep` lives in `data_prep.py`.
Modules are imported only when a stage is asked for, because their libraries (torch, transformers) are heavy.
What must answer at once (the CLI's verbs, the pipeline's components, the check of run parameters) reads the
contracts as data: derived from the modules, like bytecode, and kept in `__pycache__/contracts.json` with a
fingerprint of the package's source; a change to any source file derives them again (seconds, once).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import pkgutil
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic

from vesselseg.stages.contract import Stage

log = logging.getLogger(__name__)


def module_name(stage: str) -> str:
    return f"{__name__}.{stage.replace('-', '_')}"


def stage_names() -> list[str]:
    return list(load_contracts())


def stage_module(name: str) -> ModuleType:
    """The stage's module, imported by its name alone (a task imports only its own stage)."""
    try:
        module = importlib.import_module(module_name(name))
    except ModuleNotFoundError as err:
        if err.name != module_name(name):
            raise
    else:
        if isinstance(getattr(module, "STAGE", None), Stage):
            return module
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(sorted(stage_names()))}")


def stage_contract(name: str) -> Stage:
    contract = stage_module(name).STAGE
    assert contract.name == name, f"{module_name(name)}.STAGE must be the {name!r} stage"
    return contract


def discover() -> dict[str, Stage]:
    """Every stage: the modules of this package that declare `STAGE` (imports them all: slow)."""
    found: dict[str, Stage] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        contract = getattr(importlib.import_module(f"{__name__}.{info.name}"), "STAGE", None)
        if not isinstance(contract, Stage):
            continue  # a helper module (inputs, scratch, ...)
        if module_name(contract.name) != f"{__name__}.{info.name}":
            raise ValueError(
                f"{__name__}.{info.name} declares the stage {contract.name!r}: a stage lives in the module named after "
                f"it, {module_name(contract.name)}"
            )
        found[contract.name] = contract
    return found


# What the check of run parameters reads of a config's JSON schema: its shape (descriptions, defaults and bounds
# are the task's to validate, with pydantic).
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
    for name, contract in discover().items():
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


def package_fingerprint() -> str:
    """A hash of every source file the contracts can depend on: the whole package, and pydantic's version."""
    import vesselseg

    roots = dict.fromkeys([Path(vesselseg.__file__).parent, *map(Path, __path__)])
    digest = hashlib.sha256(pydantic.VERSION.encode())
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_file() -> Path:
    return Path(__path__[0]) / "__pycache__" / "contracts.json"


_loaded: dict[str, dict[str, Any]] = {}


def load_contracts() -> dict[str, Any]:
    """Every stage's contract as data, without importing a stage while the package's source is unchanged."""
    fingerprint = package_fingerprint()
    if fingerprint in _loaded:
        return _loaded[fingerprint]
    path = cache_file()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if cached.get("fingerprint") == fingerprint:
        contracts: dict[str, Any] = cached["contracts"]
    else:
        log.info("deriving the stage contracts from the stage modules (the source changed since %s)", path)
        text = json.dumps({"fingerprint": fingerprint, "contracts": contracts_data()}, sort_keys=True)
        contracts = json.loads(text)["contracts"]  # as the kept copy reads back: lists, not tuples
        try:
            path.parent.mkdir(exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}")
            partial.write_text(text)
            partial.replace(path)
        except OSError as err:  # a read-only install: derive them again next time
            log.warning("could not keep the stage contracts in %s: %s", path, err)
    _loaded.clear()
    _loaded[fingerprint] = contracts
    return contracts

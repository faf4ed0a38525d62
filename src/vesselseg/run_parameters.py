"""Run parameters checked before anything runs: each `<stage>_overrides` dict against its stage's config.

A typo in `visualize_overrides` would otherwise surface only when the visualize task starts, after fine-tuning.
The check reads the stages' contracts as data (`vesselseg.stages.load_contracts`: each config's JSON schema), so it
answers in a fraction of a second without importing torch; it applies the configs' own rule, `extra="forbid"`, at
every level, and the task validates the whole config again with pydantic when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vesselseg.config import ConfigError
from vesselseg.opt_ins import refuse_in_parameters
from vesselseg.stages import load_contracts

SUFFIX = "_overrides"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _sections(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas a value may be (a field `X | None` or a union has several members)."""
    schema = _resolve(schema, root)
    members = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if members:
        return [s for member in members for s in _sections(member, root)]
    return [schema] if schema.get("type") == "object" else []


def _check(
    data: Mapping[str, Any],
    schema: dict[str, Any],
    root: dict[str, Any],
    where: str,
    stage: str,
    wired: tuple[str, ...] = (),
) -> None:
    sections = _sections(schema, root)
    if not sections and _resolve(schema, root):
        raise ConfigError(f"{where}: stage {stage!r} takes a value here, not a section of keys")
    fields = {key: value for section in sections for key, value in section.get("properties", {}).items()}
    # A free-form mapping (dict[str, ...]) takes any key; a config (extra="forbid") only its fields.
    free = any(section.get("additionalProperties", True) is not False for section in sections)
    if not sections:  # a field of any type (schema {}) takes any mapping
        return
    for key, value in data.items():
        here = f"{where}.{key}"
        if key not in fields:
            if free:
                continue
            raise ConfigError(
                f"{here}: stage {stage!r} has no setting {key!r}; valid keys in {where}: "
                + ", ".join(sorted(set(fields) - set(wired)))
            )
        if isinstance(value, Mapping):
            _check(value, fields[key], root, here, stage)


def check_overrides(parameter: str, overrides: Any, contracts: dict[str, Any] | None = None) -> None:
    """Refuses `<stage>_overrides` that name a key its stage's config lacks (at any depth), set an operator opt-in,
    or replace an input the pipeline wires; the error names the key, the stage and the valid keys."""
    contracts = contracts if contracts is not None else load_contracts()
    # The stages a pipeline task runs (a stage without outputs, like import-official, is run from the CLI only).
    by_parameter = {c["overrides_parameter"]: name for name, c in contracts.items() if c["outputs"]}
    if parameter not in by_parameter:
        raise ConfigError(
            f"{parameter}: no stage takes these overrides; stage overrides: {', '.join(sorted(by_parameter))}"
        )
    stage = by_parameter[parameter]
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{parameter} must be a mapping of {stage!r} config keys, not {type(overrides).__name__}")
    contract = contracts[stage]
    refuse_in_parameters(parameter, overrides, tuple(contract["wired"]))
    schema = contract["config_schema"]
    # The wired inputs are fields too, but not ones a run may set.
    _check(overrides, schema, schema, parameter, stage, tuple(contract["wired"]))


def check_run_parameters(params: Mapping[str, Any]) -> None:
    """Checks every `*_overrides` parameter of a run (the others are the pipeline's own, checked against it)."""
    contracts = load_contracts()
    for name, value in params.items():
        if name.endswith(SUFFIX):
            check_overrides(name, value, contracts)

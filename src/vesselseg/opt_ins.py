"""Operator opt-ins: the switches that let code from outside the project run (a model folder's own Python,
pickled checkpoints).

Whoever may submit a run sets its parameters (the `*_overrides` dicts), so a parameter must not be able to
turn these on: they come from the operator, as environment variables of the task, which a run cannot set.
On a cluster the compiled pipeline carries them (the cluster config's `opt_ins`, or the same variables in
the environment of `vesselseg compile-cluster`); locally `vesselseg run-local --trust-remote-code /
--trust-pickle` sets them. A stage run directly (`vesselseg infer --set infer.trust_remote_code=true`) is the
operator's own command and keeps its config fields.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from vesselseg.config import ConfigError

PREFIX = "trust_"
ENV = {"trust_remote_code": "VESSELSEG_TRUST_REMOTE_CODE", "trust_pickle": "VESSELSEG_TRUST_PICKLE"}
# Where each stage's config holds an opt-in (dotted path); the task's environment fills it.
FIELDS: dict[str, dict[str, str]] = {
    "infer": {"trust_remote_code": "infer.trust_remote_code"},
    "convert": {"trust_pickle": "trust_pickle"},
}
_TRUE, _FALSE = {"1", "true", "yes"}, {"", "0", "false", "no"}


class OptInError(ConfigError):
    """A run parameter tried to set an operator opt-in, or replace an input the pipeline wires."""


def operator_opt_ins(env: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Each opt-in as the operator set it in the environment (absent: off)."""
    env = os.environ if env is None else env
    values = {}
    for name, variable in ENV.items():
        raw = env.get(variable, "").strip().lower()
        if raw not in _TRUE | _FALSE:
            raise ConfigError(f"{variable}={env[variable]!r}: expected true or false")
        values[name] = raw in _TRUE
    return values


def _keys(data: Any, path: str = "") -> list[str]:
    if not isinstance(data, Mapping):
        return []
    found = []
    for key, value in data.items():
        here = f"{path}.{key}" if path else str(key)
        found.append(here)
        found.extend(_keys(value, here))
    return found


def refuse_in_parameters(parameter: str, overrides: Any, wired: tuple[str, ...] = ()) -> None:
    """Refuses a run parameter (`parameter` names it) that sets an opt-in or replaces a wired input."""
    for key in _keys(overrides):
        name = key.rsplit(".", 1)[-1]
        if name.startswith(PREFIX):
            variable = ENV.get(name, "VESSELSEG_" + name.upper())
            raise OptInError(
                f"{parameter}.{key}: {name} is an operator opt-in (it lets code from outside the project run with "
                f"this task's credentials); a run parameter cannot set it. The operator sets {variable}=true: in "
                "the cluster config's opt_ins when compiling, or with `vesselseg run-local --"
                f"{name.replace('_', '-')}` locally"
            )
        if key in wired:
            raise OptInError(
                f"{parameter}.{key}: the pipeline wires {key!r} from the task that produces it; a run parameter "
                "cannot replace it"
            )


def apply_opt_ins(stage: str, data: dict[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`data` with the stage's opt-in fields set from the operator's environment."""
    values = operator_opt_ins(env)
    for name, dotted in FIELDS.get(stage, {}).items():
        *parents, leaf = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(node, dict):  # otherwise the config is malformed and its validation says where
            node[leaf] = values[name]
    return data

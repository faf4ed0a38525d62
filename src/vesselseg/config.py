"""Stage configuration: a YAML file plus `--set dotted.key=value` overrides, validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from vesselseg.errors import VesselsegError

C = TypeVar("C", bound=BaseModel)


class ConfigModel(BaseModel):
    """The base of every config: no float field takes inf or NaN.

    A bound such as `gt=0` lets inf through and NaN compares false with everything, so `lr=inf` or `beta=nan`
    would pass field by field and surface much later as a diverged run or a silently empty map.
    Subclasses set their own `model_config` (extra="forbid", frozen, ...); pydantic merges it with this one.
    """

    model_config = ConfigDict(allow_inf_nan=False)


class ConfigError(VesselsegError, ValueError):
    """A config file or override is malformed; the message names the file, key or value."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=3` → (['a', 'b'], 3); the value is read as YAML so numbers, booleans and lists work."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {err}") from err
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(cls: type[C], path: Path | None = None, overrides: list[str] | None = None) -> C:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
        data = loaded
    apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        source = f"config file {path}" if path else "config"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise ConfigError(f"{source} for {cls.__name__}: {problems}") from err

"""Named recipes: run configurations kept as files in `recipes/<name>.yaml`, each with the hardware it was
measured on and the measured numbers it relies on.

A recipe's `parameters` are pipeline parameters, the same nested data that `--set` writes; `run-local`, `submit`
and `schedule` take `--recipe NAME` and apply the recipe's values before their own `--set` options, so an explicit
option wins over the recipe. Each stage override dict is then checked like any other run parameter.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from vesselseg.config import ConfigError, ConfigModel

# The checkout's recipes/ folder (src/vesselseg/recipes.py → ../../recipes): recipes are run from a checkout.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = PROJECT_ROOT / "recipes"
# A name is a file stem in RECIPES_DIR: no path separators, so `--recipe` never reads outside that folder.
NAME = re.compile(r"[a-z0-9][a-z0-9.-]*")


class Reference(ConfigModel):
    """A measured number the recipe relies on, and the file of this project that records it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: str = Field(min_length=1, description="what was measured, with its value, machine and date")
    source: str = Field(description="the record: a path from the project root, optionally with a #section")

    @field_validator("source")
    @classmethod
    def _inside_project(cls, source: str) -> str:
        path = source.partition("#")[0]
        parts = Path(path).parts
        if not path or Path(path).is_absolute() or ".." in parts:
            raise ValueError(f"source {source!r} must be a relative path inside the project")
        return source


class Recipe(ConfigModel):
    """One run configuration: what it is for, the hardware it was measured on, and the pipeline parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)
    hardware: str = Field(min_length=1, description="the machine the numbers come from (or are planned for)")
    gpus: int = Field(ge=0, description="GPUs the recipe's finetune and infer tasks expect; 0: CPU only")
    measured: bool = Field(
        description="true: `references` hold numbers measured with these settings on `hardware`; false: planned, "
        "with what it is based on in `notes`"
    )
    notes: str = ""
    references: list[Reference] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict, description="pipeline parameters, as `--set` sets them")

    @model_validator(mode="after")
    def _says_where_it_stands(self) -> Recipe:
        if self.measured and not self.references:
            raise ValueError("a measured recipe names the records of its numbers in `references`")
        if not self.measured and not self.notes:
            raise ValueError("a recipe that was not measured says why, and what it is based on, in `notes`")
        return self

    def overrides(self) -> list[str]:
        """The parameters as `--set` options (`a.b=<YAML>`), leaf by leaf, so that a later `--set` of one leaf
        replaces that leaf only."""
        return [f"{key}={_yaml(value)}" for key, value in _leaves(self.parameters)]


def _yaml(value: Any) -> str:
    # One line of YAML that `--set` reads back as the same value (PyYAML writes 4e-5 as 4.0e-05: a float to it).
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
    return text.removesuffix("\n...\n").strip()


def _leaves(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    leaves: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if "." in str(key) or "=" in str(key):
            raise ConfigError(f"parameter key {dotted!r}: a key may not hold '.' or '='")
        if isinstance(value, dict) and value:
            leaves.extend(_leaves(value, dotted + "."))
        else:
            leaves.append((dotted, value))
    return leaves


def known_recipes(folder: Path = RECIPES_DIR) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.yaml"))


def recipe_path(name: str, folder: Path = RECIPES_DIR) -> Path:
    known = known_recipes(folder)
    if not NAME.fullmatch(name) or name not in known:
        raise ConfigError(f"unknown recipe {name!r}; known recipes in {folder}: {', '.join(known) or 'none'}")
    return folder / f"{name}.yaml"


def load_recipe(name: str, folder: Path = RECIPES_DIR) -> Recipe:
    path = recipe_path(name, folder)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must hold a mapping, not {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"recipe {path}: {problems}") from err
    for reference in recipe.references:
        if not (folder.parent / reference.source.partition("#")[0]).is_file():
            raise ConfigError(f"recipe {path}: reference {reference.source!r} is not a file of the project")
    return recipe


def with_recipe(name: str | None, overrides: list[str]) -> list[str]:
    """`--set` options with the recipe's first: the explicit options, applied later, win."""
    return overrides if name is None else load_recipe(name).overrides() + overrides


def add_recipe_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        metavar="NAME",
        help=f"a named run configuration from recipes/ ({', '.join(known_recipes())}); --set options win over it",
    )

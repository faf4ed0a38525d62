"""One module per pipeline stage, each exposing `Config`, `Result` and `run(config) -> Result`.

The registry maps the command-line name (`vesselseg <name>`) to the module; a stage that is not
built yet is simply absent.
"""

from __future__ import annotations

import importlib
from types import ModuleType

STAGES: dict[str, str] = {
    "data-prep": "vesselseg.stages.data_prep",
    "baseline": "vesselseg.stages.baseline",
    "finetune": "vesselseg.stages.finetune",
    "convert": "vesselseg.stages.convert",
    "infer": "vesselseg.stages.infer",
    "evaluate": "vesselseg.stages.evaluate",
    "visualize": "vesselseg.stages.visualize",
    "import-official": "vesselseg.stages.import_official",
}


def stage_module(name: str) -> ModuleType:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(sorted(STAGES))}")
    return importlib.import_module(STAGES[name])

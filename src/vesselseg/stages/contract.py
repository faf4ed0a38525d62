"""The stage contract: what a stage declares once, and what everything above it reads.

A stage module defines `Config`, `Result`, `run(config) -> Result` and `STAGE = Stage(...)`: its name (the CLI
verb, the KFP component and the pipeline task), its artifact inputs (which `Config` field each fills), its
parameters, its outputs (name and KFP kind) and `emit`, which turns a `Result` into what each output holds.
From that one declaration the KFP component is generated (components/), one adapter runs it (vesselseg.kfp_glue),
the CLI offers it (`vesselseg <name>`), and run parameters are checked against it before anything runs
(vesselseg.run_parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel

if TYPE_CHECKING:
    from vesselseg.storage import InputRef, ObjectStore

# KFP's artifact types, by their `dsl` names.
Kind = Literal["Artifact", "Dataset", "Model", "Metrics", "ClassificationMetrics", "HTML", "Markdown"]


@dataclass(frozen=True)
class Input:
    """An artifact input: the KFP artifact holds an `InputRef`, which fills `Config.<field>`.

    Several inputs naming one list field fill it in the order they are declared.
    """

    name: str
    kind: Kind
    field: str
    many: bool = False


# What the stages that score and draw the test split read: the dataset, its test labels (no other stage is given
# them: tests/integration/test_pipeline_dag.py) and the prediction sets. evaluate's inputs, and visualize's first.
SCORED_INPUTS = (
    Input("dataset", "Dataset", "dataset"),
    Input("test_labels", "Dataset", "test_labels"),
    Input("model_predictions", "Artifact", "predictions", many=True),
    Input("baseline_predictions", "Artifact", "predictions", many=True),
)


@dataclass(frozen=True)
class Parameter:
    """A plain component parameter (from the pipeline's wiring) that sets these dotted `Config` fields."""

    name: str
    type: type
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Output:
    name: str
    kind: Kind


class Pointer(NamedTuple):
    """An output that points at a published artifact (the KFP artifact holds only its `InputRef`)."""

    ref: InputRef
    metadata: dict[str, Any] = {}


class Metrics(NamedTuple):
    """Scalars for a KFP Metrics output, floats rounded to `digits` (None: as they are); None values are left out."""

    values: dict[str, float | int | None]
    digits: int | None = 6


class File(NamedTuple):
    """Bytes written as the KFP artifact itself (a small output: a summary, an HTML page)."""

    data: bytes
    metadata: dict[str, Any] = {}


class Classification(NamedTuple):
    """A ROC curve and a confusion matrix for a KFP ClassificationMetrics output."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]
    labels: list[str]
    matrix: list[list[int]]
    metadata: dict[str, Any] = {}


Emitted = Pointer | Metrics | File | Classification


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    config: type[BaseModel]
    result: type[BaseModel]
    run: Callable[..., BaseModel]
    emit: Callable[[Any, ObjectStore], dict[str, Emitted]]
    inputs: tuple[Input, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    outputs: tuple[Output, ...] = ()
    # Config fields only the DAG sets (besides the inputs'): a run parameter may not replace them.
    reserved: tuple[str, ...] = ()
    gpu: bool = False  # runs in the GPU image

    @property
    def function_name(self) -> str:
        """The component's Python name; KFP turns it back into `name` for the task and the IR."""
        return self.name.replace("-", "_")

    @property
    def overrides_parameter(self) -> str:
        """The pipeline parameter that carries this stage's config overrides."""
        return f"{self.function_name}_overrides"

    @property
    def wired(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i.field for i in self.inputs)) + self.reserved

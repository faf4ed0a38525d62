"""KFP components, one per stage, made from the stage's contract (vesselseg.stages.contract, read as data with
`load_contracts`): its inputs, parameters and outputs become the component's signature, and its body hands them all
to the one adapter, `vesselseg.kfp_glue.run_stage`. A new stage needs no code here: `stage(name, ...)` is its task,
and `with_stage_overrides` gives the pipeline its `<stage>_overrides` run parameter.

KFP embeds a lightweight component's source in the compiled pipeline and runs it in the task's container, so the
function is written out as source (registered with `linecache`, where `inspect` finds it) rather than built from
closures. What it reads:

    def baseline(dataset: dsl.Input[dsl.Dataset], overrides: dict, predictions: dsl.Output[dsl.Artifact]):
        'Frangi vesselness on the validation and test images; threshold chosen on validation only.'
        from vesselseg.kfp_glue import run_stage

        run_stage('baseline', locals())
"""

from __future__ import annotations

import functools
import inspect
import linecache
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from kfp import dsl

from components.images import CPU_IMAGE, GPU_IMAGE
from vesselseg.cluster.platform import apply_platform
from vesselseg.config import ConfigError
from vesselseg.stages import load_contracts


def component_source(name: str, contract: dict[str, Any]) -> str:
    inputs = [f"{i['name']}: dsl.Input[dsl.{i['kind']}]" for i in contract["inputs"]]
    parameters = [f"{p['name']}: {p['type']}" for p in contract["parameters"]]
    outputs = [f"{o['name']}: dsl.Output[dsl.{o['kind']}]" for o in contract["outputs"]]
    signature = ", ".join([*inputs, *parameters, "overrides: dict", *outputs])
    return (
        f"def {contract['function_name']}({signature}):\n"
        f"    {contract['description']!r}\n"
        "    from vesselseg.kfp_glue import run_stage\n\n"
        f"    run_stage({name!r}, locals())\n"
    )


@functools.cache
def component(name: str) -> Any:
    """The KFP component of stage `name` (its task in the pipeline and the IR takes the same name)."""
    contracts = load_contracts()
    if name not in contracts:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(sorted(contracts))}")
    contract = contracts[name]
    source = component_source(name, contract)
    filename = f"<vesselseg component {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"dsl": dsl}
    # dont_inherit: this module's `from __future__ import annotations` would turn the types KFP reads into strings.
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)
    image = GPU_IMAGE if contract["gpu"] else CPU_IMAGE
    return dsl.component(base_image=image, install_kfp_package=False)(namespace[contract["function_name"]])


def pipeline_stages() -> list[str]:
    """The stages a pipeline task runs: those with outputs (import-official is run from the command line only)."""
    return [name for name, contract in load_contracts().items() if contract["outputs"]]


# While a pipeline function runs: each stage's overrides parameter (a KFP channel), and the stages given a task.
_overrides: ContextVar[tuple[dict[str, Any], set[str]] | None] = ContextVar("stage_overrides", default=None)


def stage(name: str, **arguments: Any) -> dsl.PipelineTask:
    """A stage's task: its component, named as the stage, given the run's `<stage>_overrides` and the platform's
    settings for that stage. Only inside a pipeline decorated with `with_stage_overrides`."""
    if (current := _overrides.get()) is None:
        raise TypeError(f"stage({name!r}) makes a task of a pipeline decorated with @with_stage_overrides only")
    overrides, used = current
    used.add(name)
    task = component(name)(**arguments, overrides=overrides[name]).set_display_name(name)
    apply_platform(task, name)
    return task


def with_stage_overrides(body: Callable[..., Any]) -> Callable[..., Any]:
    """`body` with one more parameter per pipeline stage, `<stage>_overrides: dict = {}`, which `stage()` hands to
    that stage's task. Every pipeline stage must have a task: overrides no task reads would be ignored silently."""
    contracts = load_contracts()
    names = pipeline_stages()
    parameters = {name: contracts[name]["overrides_parameter"] for name in names}
    own = inspect.signature(body)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    added = [inspect.Parameter(p, kind, default={}, annotation=dict) for p in parameters.values()]
    signature = own.replace(parameters=[*own.parameters.values(), *added])

    @functools.wraps(body)
    def pipeline(*args: Any, **kwargs: Any) -> Any:
        values = signature.bind(*args, **kwargs)
        values.apply_defaults()
        arguments = dict(values.arguments)
        used: set[str] = set()
        token = _overrides.set(({name: arguments.pop(p) for name, p in parameters.items()}, used))
        try:
            outputs = body(**arguments)
        finally:
            _overrides.reset(token)
        if missing := [name for name in names if name not in used]:
            raise ConfigError(
                f"stage {missing[0]!r} has no task in the pipeline {body.__name__}: add one line, "
                f"stage({missing[0]!r}, ...), or its {parameters[missing[0]]} would be ignored"
            )
        return outputs

    pipeline.__signature__ = signature  # type: ignore[attr-defined]  # what KFP reads: the pipeline's parameters
    return pipeline

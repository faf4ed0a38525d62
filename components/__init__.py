"""KFP components, one per stage, made from the stage's contract (vesselseg.stages.contract, kept as data in
`stages/contracts.json`): its inputs, parameters and outputs become the component's signature, and its body hands
them all to the one adapter, `vesselseg.kfp_glue.run_stage`. A new stage needs no code here.

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
import linecache
from typing import Any

from kfp import dsl

from components.images import CPU_IMAGE, GPU_IMAGE
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

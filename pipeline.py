"""The vesselseg pipeline: wiring only. Each task is a stage's component (components/, made from the stage's
contract in src/vesselseg/stages); the logic lives in src/vesselseg. Every pipeline stage also gets a run parameter
`<stage>_overrides: dict = {}` (components.with_stage_overrides), which `stage()` hands to its task."""

from typing import NamedTuple

from kfp import dsl

from components import stage, with_stage_overrides


class Outputs(NamedTuple):
    summary: dsl.Artifact
    html: dsl.HTML


@dsl.pipeline(
    name="vesselseg",
    description="Prepare vessel data, fine-tune a Sa2VA-architecture model with DeepSpeed, convert it, run it, "
    "evaluate it honestly beside a Frangi baseline, gate the champion and draw the report.",
)
@with_stage_overrides
def vesselseg_pipeline(dataset_source: str = "synthetic", seed: int = 0) -> Outputs:
    prep = stage("data-prep", source=dataset_source, seed=seed)
    dataset = prep.outputs["dataset"]
    # The test split's ground truth: given to the tasks that score and draw, and to no other.
    test_labels = prep.outputs["test_labels"]

    trained = stage("finetune", dataset=dataset)
    converted = stage("convert", training=trained.outputs["training"], dataset=dataset)
    predicted = stage("infer", model=converted.outputs["model"], dataset=dataset)
    frangi = stage("baseline", dataset=dataset)
    scored_inputs = {
        "dataset": dataset,
        "test_labels": test_labels,
        "model_predictions": predicted.outputs["predictions"],
        "baseline_predictions": frangi.outputs["predictions"],
    }
    scored = stage("evaluate", **scored_inputs)
    drawn = stage(
        "visualize", **scored_inputs, evaluation=scored.outputs["evaluation"], training=trained.outputs["training"]
    )
    stage(
        "promote",
        evaluation=scored.outputs["evaluation"],
        dataset=dataset,
        model=converted.outputs["model"],
        predictor="model",
    )
    return Outputs(summary=scored.outputs["summary"], html=drawn.outputs["html"])

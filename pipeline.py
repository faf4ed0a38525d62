"""The vesselseg pipeline: wiring only. Each task is a stage's component (components/, made from the stage's
contract in src/vesselseg/stages); the logic lives in src/vesselseg."""

from typing import Any, NamedTuple

from kfp import dsl

from components import component
from vesselseg.cluster.platform import apply_platform


class Outputs(NamedTuple):
    summary: dsl.Artifact
    html: dsl.HTML


def stage(name: str, **arguments: Any) -> dsl.PipelineTask:
    """A stage's task: its component, named as the stage, with the platform's settings for that stage."""
    task = component(name)(**arguments).set_display_name(name)
    apply_platform(task, name)
    return task


@dsl.pipeline(
    name="vesselseg",
    description="Prepare vessel data, fine-tune a Sa2VA-architecture model with DeepSpeed, convert it, run it, "
    "evaluate it honestly beside a Frangi baseline, gate the champion and draw the report.",
)
def vesselseg_pipeline(
    dataset_source: str = "synthetic",
    seed: int = 0,
    data_prep_overrides: dict = {},
    finetune_overrides: dict = {},
    convert_overrides: dict = {},
    infer_overrides: dict = {},
    baseline_overrides: dict = {},
    evaluate_overrides: dict = {},
    visualize_overrides: dict = {},
    promote_overrides: dict = {},
) -> Outputs:
    prep = stage("data-prep", source=dataset_source, seed=seed, overrides=data_prep_overrides)
    dataset = prep.outputs["dataset"]
    # The test split's ground truth: given to the tasks that score and draw, and to no other.
    test_labels = prep.outputs["test_labels"]

    trained = stage("finetune", dataset=dataset, overrides=finetune_overrides)
    converted = stage("convert", training=trained.outputs["training"], dataset=dataset, overrides=convert_overrides)
    predicted = stage("infer", model=converted.outputs["model"], dataset=dataset, overrides=infer_overrides)
    frangi = stage("baseline", dataset=dataset, overrides=baseline_overrides)
    predictions = {
        "model_predictions": predicted.outputs["predictions"],
        "baseline_predictions": frangi.outputs["predictions"],
    }
    scored = stage("evaluate", dataset=dataset, test_labels=test_labels, **predictions, overrides=evaluate_overrides)
    drawn = stage(
        "visualize",
        dataset=dataset,
        test_labels=test_labels,
        **predictions,
        evaluation=scored.outputs["evaluation"],
        training=trained.outputs["training"],
        overrides=visualize_overrides,
    )
    stage(
        "promote",
        evaluation=scored.outputs["evaluation"],
        dataset=dataset,
        model=converted.outputs["model"],
        predictor="model",
        overrides=promote_overrides,
    )
    return Outputs(summary=scored.outputs["summary"], html=drawn.outputs["html"])

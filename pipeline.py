"""The vesselseg pipeline: wiring only. Stages live in `components/`, logic in `src/vesselseg`."""

from typing import NamedTuple

from kfp import dsl

from components.baseline import baseline
from components.convert import convert
from components.data_prep import data_prep
from components.evaluate import evaluate
from components.finetune import finetune
from components.infer import infer
from components.promote import promote
from components.visualize import visualize
from vesselseg.cluster.platform import apply_platform


class Outputs(NamedTuple):
    summary: dsl.Artifact
    html: dsl.HTML


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
    prep = data_prep(source=dataset_source, seed=seed, overrides=data_prep_overrides).set_display_name("data-prep")
    apply_platform(prep, "data-prep")
    dataset = prep.outputs["dataset"]
    # The test split's ground truth: given to the tasks that score and draw, and to no other.
    test_labels = prep.outputs["test_labels"]

    trained = finetune(dataset=dataset, overrides=finetune_overrides).set_display_name("finetune")
    apply_platform(trained, "finetune")
    converted = convert(
        training=trained.outputs["training"], dataset=dataset, overrides=convert_overrides
    ).set_display_name("convert")
    apply_platform(converted, "convert")
    predicted = infer(model=converted.outputs["model"], dataset=dataset, overrides=infer_overrides)
    predicted.set_display_name("infer")
    apply_platform(predicted, "infer")

    frangi = baseline(dataset=dataset, overrides=baseline_overrides).set_display_name("baseline")
    apply_platform(frangi, "baseline")

    scored = evaluate(
        dataset=dataset,
        test_labels=test_labels,
        model_predictions=predicted.outputs["predictions"],
        baseline_predictions=frangi.outputs["predictions"],
        overrides=evaluate_overrides,
    ).set_display_name("evaluate")
    apply_platform(scored, "evaluate")
    drawn = visualize(
        dataset=dataset,
        test_labels=test_labels,
        model_predictions=predicted.outputs["predictions"],
        baseline_predictions=frangi.outputs["predictions"],
        evaluation=scored.outputs["evaluation"],
        training=trained.outputs["training"],
        overrides=visualize_overrides,
    ).set_display_name("visualize")
    apply_platform(drawn, "visualize")
    gate = promote(
        summary=scored.outputs["summary"],
        dataset=dataset,
        model=converted.outputs["model"],
        predictor="model",
        overrides=promote_overrides,
    ).set_display_name("promote")
    apply_platform(gate, "promote")
    return Outputs(summary=scored.outputs["summary"], html=drawn.outputs["html"])

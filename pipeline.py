"""The vesselseg pipeline: wiring only. Stages live in `components/`, logic in `src/vesselseg`."""

from kfp import dsl

from components.baseline import baseline
from components.data_prep import data_prep
from components.evaluate import evaluate


@dsl.pipeline(
    name="vesselseg",
    description="Prepare vessel data, score a Frangi baseline honestly, report.",
)
def vesselseg_pipeline(
    dataset_source: str = "synthetic",
    seed: int = 0,
    data_prep_overrides: dict = {},
    baseline_overrides: dict = {},
    evaluate_overrides: dict = {},
) -> dsl.Artifact:
    prep = data_prep(source=dataset_source, seed=seed, overrides=data_prep_overrides).set_display_name("data-prep")
    frangi = baseline(dataset=prep.outputs["dataset"], overrides=baseline_overrides).set_display_name("baseline")
    scored = evaluate(
        dataset=prep.outputs["dataset"],
        baseline_predictions=frangi.outputs["predictions"],
        overrides=evaluate_overrides,
    ).set_display_name("evaluate")
    return scored.outputs["summary"]

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: dsl.Input[dsl.Dataset],
    test_labels: dsl.Input[dsl.Dataset],
    model_predictions: dsl.Input[dsl.Artifact],
    baseline_predictions: dsl.Input[dsl.Artifact],
    overrides: dict,
    evaluation: dsl.Output[dsl.Artifact],
    summary: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    roc: dsl.Output[dsl.ClassificationMetrics],
):
    """Score the model and the baseline on the test split beside all-background/all-foreground, with honesty checks."""
    from vesselseg.kfp_glue import run_evaluate

    run_evaluate(
        dataset, test_labels, [model_predictions, baseline_predictions], overrides, evaluation, summary, metrics, roc
    )

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def visualize(
    dataset: dsl.Input[dsl.Dataset],
    test_labels: dsl.Input[dsl.Dataset],
    model_predictions: dsl.Input[dsl.Artifact],
    baseline_predictions: dsl.Input[dsl.Artifact],
    evaluation: dsl.Input[dsl.Artifact],
    training: dsl.Input[dsl.Model],
    overrides: dict,
    report: dsl.Output[dsl.Artifact],
    html: dsl.Output[dsl.HTML],
    markdown: dsl.Output[dsl.Markdown],
):
    """Panels, plots (training curves included) and the self-contained HTML report of the evaluated run."""
    from vesselseg.kfp_glue import run_visualize

    run_visualize(
        dataset,
        test_labels,
        [model_predictions, baseline_predictions],
        evaluation,
        training,
        overrides,
        report,
        html,
        markdown,
    )

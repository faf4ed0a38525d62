from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def visualize(
    dataset: dsl.Input[dsl.Dataset],
    baseline_predictions: dsl.Input[dsl.Artifact],
    evaluation: dsl.Input[dsl.Artifact],
    overrides: dict,
    report: dsl.Output[dsl.Artifact],
    html: dsl.Output[dsl.HTML],
    markdown: dsl.Output[dsl.Markdown],
):
    """Panels, plots and the self-contained HTML report of the evaluated run."""
    from vesselseg.kfp_glue import run_visualize

    run_visualize(dataset, [baseline_predictions], evaluation, overrides, report, html, markdown)

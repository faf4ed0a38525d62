from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promote(
    summary: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Artifact],
    predictor: str,
    overrides: dict,
    decision: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
):
    """Promote `model` to champion only if its test Dice beats the champion's CI upper bound on the same split."""
    from vesselseg.cluster.champion import run_promote

    run_promote(summary, dataset, model, predictor, overrides, decision, metrics)

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def baseline(dataset: dsl.Input[dsl.Dataset], overrides: dict, predictions: dsl.Output[dsl.Artifact]):
    """Frangi vesselness on the validation and test images; threshold chosen on validation only."""
    from vesselseg.kfp_glue import run_baseline

    run_baseline(dataset, overrides, predictions)

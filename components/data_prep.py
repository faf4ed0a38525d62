from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def data_prep(
    source: str,
    seed: int,
    overrides: dict,
    dataset: dsl.Output[dsl.Dataset],
    test_labels: dsl.Output[dsl.Dataset],
):
    """Read the dataset at `source` (or generate `synthetic`), split it, publish it to the object store;
    the test split's ground truth goes to `test_labels`, its own artifact, for the scoring tasks only."""
    from vesselseg.kfp_glue import run_data_prep

    run_data_prep(source, seed, overrides, dataset, test_labels)

"""The vesselseg pipeline: wiring only. Stages live in `components/`, logic in `src/vesselseg`."""

from kfp import dsl

from components.data_prep import data_prep


@dsl.pipeline(
    name="vesselseg",
    description="Prepare vessel data, fine-tune a Sa2VA-architecture model, evaluate it honestly, report.",
)
def vesselseg_pipeline(
    dataset_source: str = "synthetic",
    seed: int = 0,
    data_prep_overrides: dict = {},
):
    data_prep(source=dataset_source, seed=seed, overrides=data_prep_overrides).set_display_name("data-prep")

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def convert(
    training: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    overrides: dict,
    model: dsl.Output[dsl.Model],
    parity: dsl.Output[dsl.Metrics],
):
    """DeepSpeed checkpoint → Hugging Face folder (safetensors shards), published only if parity with the training-time
    model holds on the validation probe; `model` points at the folder, `parity` holds the errors per output."""
    from vesselseg.kfp_glue import run_convert

    run_convert(training, dataset, overrides, model, parity)

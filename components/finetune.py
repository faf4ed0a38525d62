from kfp import dsl

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def finetune(
    dataset: dsl.Input[dsl.Dataset],
    overrides: dict,
    training: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
):
    """DeepSpeed fine-tuning (one rank per GPU, or CPU ranks on gloo); resumes a killed run from its checkpoints.

    `training` points at the published training artifact (model/ config + tokenizer, DeepSpeed checkpoint/,
    train_log.jsonl, train_summary.json); `metrics` holds the final numbers. GPUs, /dev/shm and the timeout
    are set on the task by the pipeline's platform settings.
    """
    from vesselseg.kfp_glue import run_finetune

    run_finetune(dataset, overrides, training, metrics)

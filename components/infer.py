"""The infer stage's fan-out: one slice of the prediction set per task (the whole set is `component("infer")`).

GPUs are a task setting, not a component one: the pipeline calls `with_gpus(task, n)`. For more images than one
node should take, `infer_shard` runs under `dsl.ParallelFor` over shard indices (each on its own GPU node), all
filling the same resumable state in the object store; a final `infer` task, `.after()` the loop, finds every image
done and only assembles and publishes the prediction set.
"""

from kfp import dsl

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def infer_shard(
    model: dsl.Input[dsl.Artifact],
    dataset: dsl.Input[dsl.Dataset],
    overrides: dict,
    shard_index: int,
    shard_count: int,
) -> int:
    """One slice of the micro-batches into the shared resume state; publishes nothing; returns images predicted."""
    from vesselseg.kfp_glue import run_infer_shard

    return run_infer_shard(model, dataset, overrides, shard_index, shard_count)


def with_gpus(task: dsl.PipelineTask, count: int, accelerator: str = "nvidia.com/gpu") -> dsl.PipelineTask:
    """Requests `count` GPUs for an infer task; the stage's `auto` strategy then plans over what it finds."""
    return task.set_accelerator_type(accelerator).set_accelerator_limit(count)

"""DeepSpeed fine-tuning of Sa2VA models: config, data, engine, loop, checkpoints, logging and the launcher.

The per-rank recipe is `loop.train`, which reaches the object store only through the `publisher.RunPublisher` it is
given; the finetune stage (vesselseg.stages.finetune) prepares a `job.TrainJob` and launches the ranks, each
`python -m vesselseg.stages.finetune_rank` under torchrun, which builds the publisher and calls `loop.train`;
`base_model.load_base_model` builds the model a run starts from. This package's top level imports neither DeepSpeed
nor the object store, so GPU benchmarks can use `vesselseg.finetune.engine` where only torch, transformers, peft and
DeepSpeed exist.
"""

from vesselseg.finetune.config import AugmentConfig, FinetuneConfig
from vesselseg.finetune.errors import TrainingError

__all__ = ["AugmentConfig", "FinetuneConfig", "TrainingError"]

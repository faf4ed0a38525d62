"""DeepSpeed fine-tuning of Sa2VA models: config, data, engine, loop, checkpoints, logging and the launcher.

The per-rank recipe is `loop.train`; `python -m vesselseg.finetune.worker` runs it under torchrun; the finetune
stage (vesselseg.stages.finetune) prepares a `job.TrainJob` and launches the ranks; `base_model.load_base_model`
builds the model a run starts from. This package's top level imports neither DeepSpeed nor the object store, so
GPU benchmarks can use `vesselseg.finetune.engine` where only torch, transformers, peft and DeepSpeed exist.
"""

from vesselseg.finetune.config import AugmentConfig, FinetuneConfig
from vesselseg.finetune.errors import TrainingError

__all__ = ["AugmentConfig", "FinetuneConfig", "TrainingError"]

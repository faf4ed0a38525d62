"""Inference: one model over many images and GPUs — replicas, sharded, pipelined, or the CPU.

`choose_plan` (strategy.py) turns a model's footprint and the GPUs' free memory into a plan; `execute`
(replicas.py) runs it with one server per copy (pipelined.py); `runner.py` keeps finished images resumable and
writes the prediction set. The stage `vesselseg.stages.infer` ties them to artifacts. The object store and kfp
are imported only by the runner and the stage, so GPU benchmarks run with the model's own dependencies.
"""

from vesselseg.infer.config import InferConfig, MemoryConfig
from vesselseg.infer.errors import InferError
from vesselseg.infer.footprint import Footprint, footprint_of
from vesselseg.infer.images import FileImages, ImageSource, SyntheticImages
from vesselseg.infer.pipelined import ImageResult, Task
from vesselseg.infer.predictor import ImagePrediction, PredictorSpec, combined_probability
from vesselseg.infer.replicas import Execution, execute
from vesselseg.infer.source import ModelFolder, RandomPreset, meta_model
from vesselseg.infer.strategy import Gpu, Plan, balance_layers, choose_plan, log_plan, visible_gpus

__all__ = [
    "Execution",
    "FileImages",
    "Footprint",
    "Gpu",
    "ImagePrediction",
    "ImageResult",
    "ImageSource",
    "InferConfig",
    "InferError",
    "MemoryConfig",
    "ModelFolder",
    "Plan",
    "PredictorSpec",
    "RandomPreset",
    "SyntheticImages",
    "Task",
    "balance_layers",
    "choose_plan",
    "combined_probability",
    "execute",
    "footprint_of",
    "log_plan",
    "meta_model",
    "visible_gpus",
]

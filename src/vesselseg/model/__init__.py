"""Sa2VA-architecture referring segmentation on stock transformers classes (model card: docs/model.md)."""

from transformers import AutoConfig, AutoModel

from vesselseg.model.config import Sa2VAConfig
from vesselseg.model.finetuning import apply_training_recipe, merge_lora
from vesselseg.model.modeling import Sa2VAModel, Sa2VAOutput
from vesselseg.model.predict import PredictionResult, predict
from vesselseg.model.presets import PRESETS, build_preset, parameter_counts, preset_config
from vesselseg.model.processing import Sa2VABatch, Sa2VAProcessor
from vesselseg.model.tokenizer import build_tokenizer

AutoConfig.register(Sa2VAConfig.model_type, Sa2VAConfig)
AutoModel.register(Sa2VAConfig, Sa2VAModel)

__all__ = [
    "PRESETS",
    "PredictionResult",
    "Sa2VABatch",
    "Sa2VAConfig",
    "Sa2VAModel",
    "Sa2VAOutput",
    "Sa2VAProcessor",
    "apply_training_recipe",
    "build_preset",
    "build_tokenizer",
    "merge_lora",
    "parameter_counts",
    "predict",
    "preset_config",
]

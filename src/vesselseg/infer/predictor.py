"""A predictor: a loaded model copy that turns a micro-batch of images into probability maps.

`PredictorSpec` is what a worker process receives (plain data, picklable); `build` loads the copy onto its GPUs.
Maps are at each image's native size: the model's `predict` upsamples the logits before the sigmoid. Several
`[SEG]` masks for one image are combined by pixelwise max; an answer without `[SEG]` gives an all-zero map (the
count says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.infer.config import Backend, DType, Layout, Mode
from vesselseg.infer.source import ModelFolder, RandomPreset, dtype_of, meta_model


@dataclass
class ImagePrediction:
    probability: np.ndarray  # float (H, W) in [0, 1]
    n_seg: int
    text: str


class Predictor(Protocol):
    def __call__(self, images: list[np.ndarray]) -> list[ImagePrediction]: ...


def combined_probability(probabilities: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Pixelwise max over the masks of one image; zeros when there is none."""
    if not probabilities:
        return np.zeros(size, np.float32)
    return np.max(np.stack(probabilities), axis=0)


class NativePredictor:
    def __init__(self, model, processor, prompt: str, mode: Mode, max_new_tokens: int) -> None:
        self.model, self.processor = model, processor
        self.prompt, self.mode, self.max_new_tokens = prompt, mode, max_new_tokens

    def __call__(self, images: list[np.ndarray]) -> list[ImagePrediction]:
        from vesselseg.model import predict

        results = predict(
            self.model,
            self.processor,
            images,
            [self.prompt] * len(images),
            mode=self.mode,
            batch_size=len(images),
            max_new_tokens=self.max_new_tokens,
        )
        return [
            ImagePrediction(combined_probability(r.probabilities, image.shape[:2]), r.seg_count, r.text)
            for r, image in zip(results, images, strict=True)
        ]


class PredictorSpec(BaseModel):
    """Everything a worker needs to load its copy and predict; the devices come with the plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Backend = "native"
    source: ModelFolder | RandomPreset = Field(discriminator="kind")
    dtype: DType = "auto"
    layout: Layout = "balanced"
    mode: Mode = "auto"
    prompt: str
    max_new_tokens: int = 2048
    trust_remote_code: bool = False

    def torch_dtype(self, group: list[int]) -> torch.dtype:
        return dtype_of(self.dtype, on_gpu=bool(group))

    def device_map(self, group: list[int], layers: list[int], budgets: dict[int, int]) -> dict[str, int | str] | None:
        """None on the CPU; the whole copy on one GPU; else the planned split."""
        from vesselseg.infer.sharded import accelerate_device_map, balanced_device_map

        if not group:
            return None
        if len(group) == 1:
            return {"": group[0]}
        skeleton = meta_model(self.source.config(), self.torch_dtype(group))
        if self.layout == "accelerate":
            return accelerate_device_map(skeleton, group, budgets, self.torch_dtype(group))
        return balanced_device_map(skeleton, group, layers)

    def build(self, group: list[int], layers: list[int], budgets: dict[int, int]) -> Predictor:
        dtype = self.torch_dtype(group)
        if self.backend == "remote_code":
            from vesselseg.infer.remote_code import load_remote_code

            if not isinstance(self.source, ModelFolder):
                raise ValueError("backend remote_code loads a folder, not a preset")
            return load_remote_code(self.source.path, self.trust_remote_code, dtype, group, budgets, self.prompt)
        model, processor = self.source.load(self.device_map(group, layers, budgets), dtype)
        if group and model.device != torch.device("cuda", group[0]):
            raise RuntimeError(f"model inputs go to {model.device}, but the hub of this copy is on cuda:{group[0]}")
        return NativePredictor(model, processor, self.prompt, self.mode, self.max_new_tokens)

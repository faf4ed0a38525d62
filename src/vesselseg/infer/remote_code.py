"""The opt-in backend for official Sa2VA Hugging Face folders, which ship their own model code.

Loading such a folder with `trust_remote_code=True` imports the Python files it names in `config.json`'s
`auto_map` and runs them with this process's rights, so nothing here happens unless the config says
`trust_remote_code: true` explicitly. The model is then used through the interface the official release documents:
`predict_forward(image=PIL image, text=..., tokenizer=...)` → `{"prediction": str, "prediction_masks": [bool
array (frames, H, W)], ...}`, one mask per generated `[SEG]`, already thresholded at 0.5. The masks become the
same outputs as the native backend's (union of the masks, p = 0 or 1), flagged uncalibrated: a 0/1 map ranks
nothing, so AUC is reported as unavailable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vesselseg.infer.config import InferConfig
from vesselseg.infer.errors import InferError
from vesselseg.infer.predictor import ImagePrediction


def require_opt_in(config: InferConfig, path: str | Path) -> None:
    """Refuses the remote-code backend unless `trust_remote_code` is explicitly true."""
    if config.backend == "remote_code" and config.trust_remote_code is not True:
        raise InferError(
            f"infer.backend is remote_code, which loads {path} with trust_remote_code=True: that imports and runs "
            "the Python files shipped in the folder (the modeling_*.py its config.json names in auto_map) with "
            "this process's rights. Set infer.trust_remote_code: true only for a folder whose code you have read "
            "or whose publisher you trust; refusing without it."
        )


class RemoteCodePredictor:
    def __init__(self, model, tokenizer, prompt: str) -> None:
        self.model, self.tokenizer, self.prompt = model, tokenizer, prompt

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[ImagePrediction]:
        return [self._one(image) for image in images]

    def _one(self, image: np.ndarray) -> ImagePrediction:
        output = self.model.predict_forward(image=Image.fromarray(image), text=self.prompt, tokenizer=self.tokenizer)
        masks = [np.asarray(m, dtype=bool) for m in output.get("prediction_masks") or []]
        union = np.zeros(image.shape[:2], dtype=bool)
        for mask in masks:
            mask = mask.any(axis=0) if mask.ndim == 3 else mask
            if mask.shape != union.shape:
                raise InferError(
                    f"predict_forward returned a mask of shape {mask.shape} for an image of shape {union.shape}; "
                    "masks must come at the image's native size (nothing is resized silently)"
                )
            union |= mask
        return ImagePrediction(union.astype(np.float32), len(masks), str(output.get("prediction", "")))


def load_remote_code(
    path: str, trust_remote_code: bool, dtype: torch.dtype, group: list[int], budgets: dict[int, int], prompt: str
) -> RemoteCodePredictor:
    """One copy on the CPU, one GPU, or spread by accelerate over `group` (the folder's code decides the rest)."""
    if trust_remote_code is not True:
        require_opt_in(InferConfig(backend="remote_code"), path)
    from transformers import AutoModel, AutoTokenizer

    kwargs: dict = {"trust_remote_code": True, "dtype": dtype}
    if len(group) > 1:
        kwargs |= {"device_map": "auto", "max_memory": {device: budgets[device] for device in group}}
    model = AutoModel.from_pretrained(path, **kwargs).eval()
    if len(group) == 1:
        model = model.to(torch.device("cuda", group[0]))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    return RemoteCodePredictor(model, tokenizer, prompt)

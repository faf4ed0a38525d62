"""Where a model copy comes from: a Hugging Face folder on disk, or a preset with random weights (GPU benchmarks).

Both load straight onto the devices of a device map in the target dtype: a folder through `from_pretrained`
(which dispatches a multi-GPU map with accelerate), a preset by building on the meta device and creating each
weight on its own device — a 26B copy never exists in fp32 on the CPU.
"""

from __future__ import annotations

import re
import zlib
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from vesselseg.infer.sharded import device_of
from vesselseg.model import Sa2VAConfig, Sa2VAModel, Sa2VAProcessor

DeviceMap = dict[str, int | str]
# The last layer of SAM2's hypernetwork MLPs: each mask's logits are linear in its weights.
MASK_HEAD_OUTPUT = re.compile(r"mask_decoder\.output_hypernetworks_mlps\.\d+\.proj_out\.")


def meta_model(config: Sa2VAConfig, dtype: torch.dtype) -> Sa2VAModel:
    """The model's structure without weights: enough for sizes and device maps."""
    with torch.device("meta"):
        model = Sa2VAModel(config)
    return model.to(dtype)


class ModelFolder(BaseModel):
    """A folder written by `Sa2VAModel.save_pretrained` + `Sa2VAProcessor.save_pretrained` (or an official one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["folder"] = "folder"
    path: str

    def config(self) -> Sa2VAConfig:
        return Sa2VAConfig.from_pretrained(self.path)

    def load(self, device_map: DeviceMap | None, dtype: torch.dtype) -> tuple[Sa2VAModel, Sa2VAProcessor]:
        model = Sa2VAModel.from_pretrained(self.path, dtype=dtype, device_map=device_map)
        return model.eval().requires_grad_(False), Sa2VAProcessor.from_pretrained(self.path)


class RandomPreset(BaseModel):
    """A preset with seeded random weights; the same seed gives the same weights on any device layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["preset"] = "preset"
    name: str
    seed: int = 0
    # Random weights give maps of 0.5 ± 0.01, where comparing two layouts' masks compares rounding noise; a gain
    # on the mask head's last layer (to which the logits are linear) spreads the maps over (0, 1).
    mask_gain: float = Field(1.0, gt=0, description="scales the random mask-head output layer (benchmarks)")

    def config(self) -> Sa2VAConfig:
        from vesselseg.model import build_tokenizer, preset_config

        return preset_config(self.name, build_tokenizer())

    def load(self, device_map: DeviceMap | None, dtype: torch.dtype) -> tuple[Sa2VAModel, Sa2VAProcessor]:
        from accelerate import dispatch_model, init_empty_weights

        from vesselseg.model import build_tokenizer, preset_config

        tokenizer = build_tokenizer()
        config = preset_config(self.name, tokenizer)
        torch.manual_seed(self.seed)
        # Weights on meta, buffers real: rotary frequencies and SAM2's positional features are computed, not loaded.
        with init_empty_weights(include_buffers=False):
            model = Sa2VAModel(config)
        device_map = device_map or {"": "cpu"}
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            device = device_of(device_map, name)
            is_parameter = isinstance(tensor, nn.Parameter)
            # SAM2's positional features follow the weights' dtype (left fp32 they meet bf16 weights in its
            # attention); rotary frequencies stay fp32, as transformers computes positions in fp32.
            keep = not tensor.is_floating_point() or name.endswith("inv_freq")
            buffer_dtype = tensor.dtype if keep else dtype
            if is_parameter:
                value = _random(name, tensor, dtype, device)
                if MASK_HEAD_OUTPUT.search(name):
                    value *= self.mask_gain
            else:
                value = tensor.to(device, buffer_dtype)
            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name)
            if is_parameter:
                owner._parameters[leaf] = nn.Parameter(value, requires_grad=False)
            else:
                owner._buffers[leaf] = value
        if len(set(device_map.values())) > 1:
            # As from_pretrained does: the KV cache is not moved between devices with the activations.
            model = dispatch_model(
                model,
                device_map=device_map,
                main_device=device_of(device_map, "vision_model"),
                skip_keys=sorted(model._skip_keys_device_placement),
            )
        return model.eval(), Sa2VAProcessor(config, tokenizer)


def _random(name: str, like: torch.Tensor, dtype: torch.dtype, device: int | str) -> torch.Tensor:
    """Normal(0, 0.02) matrices, unit norm weights, zero biases; seeded by the name so layouts agree."""
    generator = torch.Generator(
        device=torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    )
    generator.manual_seed(zlib.crc32(name.encode()))
    value = torch.empty(like.shape, dtype=dtype, device=generator.device)
    leaf = name.rpartition(".")[2]
    if like.ndim >= 2 or "embedding" in name or leaf not in ("weight", "bias"):
        return value.normal_(0.0, 0.02, generator=generator)
    return value.fill_(1.0 if leaf == "weight" else 0.0)


def dtype_of(name: str, on_gpu: bool) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return getattr(torch, name)

"""`TensorSource`: the training-time state dict of a checkpoint, read one tensor at a time.

Keys are those of the module that trained, `apply_training_recipe(Sa2VAModel(config))`: peft's names where the LLM
wears LoRA (`...q_proj.base_layer.weight`, `...lora_A.default.weight`, `...modules_to_save.default.weight`).
Tensors come back in the dtype they were stored in (fp32 master weights for trained parameters, the training dtype
for frozen ones); callers cast explicitly. `release` lets a reader drop what it has consumed, so a streaming writer
never holds more than it is writing.
"""

from __future__ import annotations

from typing import Protocol

import torch


class TensorSource(Protocol):
    description: str  # where the tensors come from, for error messages

    def shapes(self) -> dict[str, torch.Size]: ...

    def load(self, key: str) -> torch.Tensor: ...

    def release(self, keys: list[str]) -> None: ...

"""The trained parts of an xtuner `iter_N.pth`, under official Sa2VA names, → this project's names.

The naming rules live in one place: `vesselseg.model.official.keymap` (the official-weights import) maps the names of
Sa2VA's Hugging Face export (`language_model.`, `mlp1.`, `grounding_encoder.sam2_model.sam_mask_decoder.`,
`text_hidden_fcs.`, InternLM2's packed `wqkv`, ...) onto the native model, following transformers' conversion scripts.
What an iter_N.pth adds is wrapping, and only that is handled here:

  - xtuner's `mllm.model.` (or `mllm.`) before the InternVL parts;
  - peft's `base_model.model.` inside the LLM, and `modules_to_save.<adapter>.` copies of `embed_tokens` / `lm_head`;
  - LoRA adapters, `lora_A.weight` as `get_peft_model_state_dict` writes them or `lora_A.<adapter>.weight` as the
    module holds them. An adapter is mapped through the keymap rule of the weight it adapts: a rename keeps both
    matrices; a row split of a packed weight (InternLM2's `wqkv` → q, k, v) splits `lora_B` the same way and gives
    each part the shared `lora_A`, which is exact because (B·A) splits by rows like the weight.

Each official key becomes native plain keys (as `Sa2VAModel` names them) with an optional adapter role; the caller
(xtuner.py) finds the training-time key for the recipe at hand. Keys no rule maps are reported, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vesselseg.model import Sa2VAConfig
from vesselseg.model.official.families import FAMILIES, Family
from vesselseg.model.official.keymap import map_keys

ADAPTER = "default"  # the adapter name apply_training_recipe gives peft

_WRAPPERS = ("mllm.model.", "mllm.")
PEFT_LLM = "language_model.base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.(?P<role>lora_[AB])(?:\.[^.]+)?\.weight$")
_MODULES_TO_SAVE = re.compile(r"\.modules_to_save\.[^.]+\.")


@dataclass(frozen=True)
class NativeTensor:
    """What one official tensor (or one row block of it) becomes."""

    key: str  # native plain key; for an adapter, the key of the weight it adapts
    lora: str | None  # "lora_A" / "lora_B" for adapter matrices
    take: Callable[[torch.Tensor], torch.Tensor]


def family_of(config: Sa2VAConfig) -> Family:
    """The official layout the native LLM came from (InternLM2 is represented in the Llama layout)."""
    model_type = config.text_config.model_type
    for family in FAMILIES.values():
        if family.native_model_type == model_type:
            return family
    raise ValueError(f"no official Sa2VA family has a {model_type!r} LLM")


def _unwrap(key: str) -> tuple[str, str | None] | None:
    """(Hugging Face export key, adapter role) of an xtuner key; None for a frozen peft original."""
    for wrapper in _WRAPPERS:
        if key.startswith(wrapper):
            key = key[len(wrapper) :]
            break
    if ".original_module." in key:
        return None
    key = _MODULES_TO_SAVE.sub(".", key)
    if key.startswith(PEFT_LLM):
        key = "language_model." + key[len(PEFT_LLM) :]
    lora = _LORA.match(key)
    if lora:
        return f"{lora['module']}.weight", lora["role"]
    return key, None


def official_to_native(keys: list[str], config: Sa2VAConfig) -> tuple[dict[str, list[NativeTensor]], list[str]]:
    """Official key → what it becomes, and the keys that name nothing trainable here (reported as unexpected)."""
    unwrapped = {key: _unwrap(key) for key in keys}
    exported = sorted({u[0] for u in unwrapped.values() if u is not None})
    keymap = map_keys(exported, family_of(config), config)
    mapped: dict[str, list[NativeTensor]] = {}
    unexpected = []
    for key, found in unwrapped.items():
        pieces = keymap.pieces.get(found[0]) if found else None
        if not pieces or any(piece.part is not None for piece in pieces):
            unexpected.append(key)  # unknown, ignored by design, or a concatenation part (never trained)
            continue
        role = found[1]
        mapped[key] = [
            NativeTensor(piece.target, role, (lambda t: t) if role == "lora_A" else piece.take) for piece in pieces
        ]
    return mapped, sorted(unexpected)

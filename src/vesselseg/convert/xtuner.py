"""An xtuner `iter_N.pth` (official Sa2VA training) overlaid on the base model it trained from, as a `TensorSource`.

The file is `{'state_dict': {...}}` holding only what Sa2VA trains (LoRA adapters, `embed_tokens` / `lm_head`, `mlp1`,
the SAM2 mask decoder, `text_hidden_fcs`) under official names. Every other tensor of the training-time module comes
from the base model, a Hugging Face folder of `Sa2VAModel` (plain keys). The overlay says which checkpoint keys were
applied (official → native), which tensors the recipe trains but the checkpoint lacks, and which checkpoint keys name
nothing in this model; missing ones are an error unless allowed, and then keep the base value (a LoRA adapter
missing either matrix contributes nothing).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from pydantic import BaseModel

from vesselseg.convert.errors import ConversionError
from vesselseg.convert.merge import MergePlan
from vesselseg.convert.official_keys import (
    ADAPTER,
    PEFT_LLM,
    NativeTensor,
    official_to_native,
)
from vesselseg.model.official.errors import OfficialImportError
from vesselseg.model.official.reader import CheckpointReader

_LLM = "language_model."


class OverlayReport(BaseModel):
    checkpoint: str
    base: str
    applied: dict[str, list[str]]  # official key → native training-time keys (several where a packed weight splits)
    missing: list[str]  # native keys the recipe trains that the checkpoint does not hold
    unexpected: list[str]  # official keys that name no tensor of this model


def load_iter_state_dict(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The `state_dict` entry of an xtuner checkpoint file, memory-mapped."""
    path = Path(path)
    if path.is_dir():
        raise ConversionError(
            f"{path} is a folder: xtuner wrote a DeepSpeed checkpoint there; convert it with zero_to_fp32 into an "
            "iter_N.pth file first"
        )
    if not path.is_file():
        raise ConversionError(f"xtuner checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", mmap=True, weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        raise ConversionError(
            f"{path} holds Python objects besides tensors (weights_only loading refused it: "
            f"{str(err).splitlines()[0]}); set trust_pickle=true only if you trust the file"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise ConversionError(
            f"cannot read {path}: truncated or not a torch checkpoint ({str(err).splitlines()[0]})"
        ) from err
    if not isinstance(payload, dict) or "state_dict" not in payload:
        found = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ConversionError(
            f"{path} has no 'state_dict' entry (found {found}); an xtuner iter_N.pth is {{'state_dict': {{...}}}}"
        )
    state = payload["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not isinstance(state, dict) or bad:
        raise ConversionError(f"{path}: 'state_dict' must map names to tensors (e.g. {bad[:3]})")
    return state


def base_value_keys(plan: MergePlan) -> dict[str, str]:
    """Training-time key → the plain key whose base-model value it starts from (not for LoRA adapter matrices)."""
    mapping: dict[str, str] = {}
    for tensor in plan.tensors:
        if tensor.source_key is not None:
            mapping[tensor.source_key] = tensor.key
            copy = f".modules_to_save.{ADAPTER}."
            if copy in tensor.source_key:
                mapping[tensor.source_key.replace(copy, ".original_module.")] = tensor.key
        else:
            mapping[f"{tensor.lora_layer}.base_layer.{tensor.attribute}"] = tensor.key
    for alias, canonical in plan.training_aliases.items():
        if canonical in mapping:
            mapping.setdefault(alias, mapping[canonical])
    return mapping


def _candidates(native: NativeTensor) -> Iterator[str]:
    """Training-time keys a native plain key may have under this recipe: peft wraps the LLM (`base_model.model.`),
    keeps LoRA-adapted weights as `base_layer`, and trains `modules_to_save` copies of embed_tokens / lm_head."""
    forms = [native.key]
    if native.key.startswith(_LLM):
        forms.append(PEFT_LLM + native.key[len(_LLM) :])
    for form in forms:
        module, _, attribute = form.rpartition(".")
        if native.lora:
            yield f"{module}.{native.lora}.{ADAPTER}.{attribute}"
        else:
            yield form
            yield f"{module}.modules_to_save.{ADAPTER}.{attribute}"
            yield f"{module}.base_layer.{attribute}"


class XtunerOverlay:
    """Training-time tensors: the checkpoint's where it has them, else the base model's."""

    def __init__(
        self,
        plan: MergePlan,
        checkpoint: Path,
        base_dir: Path,
        allow_missing: bool = False,
        trust_pickle: bool = False,
    ):
        self.description = f"xtuner checkpoint {checkpoint} over base model {base_dir}"
        self.plan = plan
        try:
            self.base = CheckpointReader(base_dir)
        except OfficialImportError as err:
            raise ConversionError(f"base model folder {base_dir}: {err}") from err
        plain_keys = {t.key for t in plan.tensors}
        base_keys = set(self.base.keys())
        if base_keys != plain_keys:
            extra, lacking = sorted(base_keys - plain_keys), sorted(plain_keys - base_keys)
            raise ConversionError(
                f"base model {base_dir} does not match its config: {len(lacking)} tensors missing "
                f"(e.g. {lacking[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
            )
        self._base_keys = base_value_keys(plan)
        state = load_iter_state_dict(checkpoint, trust_pickle)
        mapped, unexpected = official_to_native(list(state), plan.config)
        self._overlay: dict[str, torch.Tensor] = {}
        applied: dict[str, list[str]] = {}
        for official, natives in mapped.items():
            targets = [next((c for c in _candidates(n) if c in plan.training_shapes), None) for n in natives]
            if None in targets:
                unexpected.append(official)  # a real tensor, but this recipe does not have it (e.g. no LoRA)
                continue
            for native, target in zip(natives, targets, strict=True):
                value = native.take(state[official])
                if tuple(value.shape) != tuple(plan.training_shapes[target]):
                    raise ConversionError(
                        f"{checkpoint}: {official} gives {target} the shape {list(value.shape)}, but this model has "
                        f"{list(plan.training_shapes[target])} (another LoRA rank or model size?)"
                    )
                if target in self._overlay:
                    raise ConversionError(f"{checkpoint}: {official} and another key both name {target}")
                self._overlay[target] = value
                applied.setdefault(official, []).append(target)
        missing = sorted(plan.trainable - set(self._overlay))
        self.report = OverlayReport(
            checkpoint=str(checkpoint),
            base=str(base_dir),
            applied=applied,
            missing=missing,
            unexpected=sorted(unexpected),
        )
        if missing and not allow_missing:
            raise ConversionError(
                f"{checkpoint} lacks {len(missing)} of the {len(plan.trainable)} tensors this recipe trains "
                f"(e.g. {missing[:3]}); {len(applied)} applied, {len(unexpected)} unexpected. Set allow_missing_keys "
                "to keep the base model's values for them"
            )

    def shapes(self) -> dict[str, torch.Size]:
        return dict(self.plan.training_shapes)

    def load(self, key: str) -> torch.Tensor:
        key = self.plan.training_aliases.get(key, key)
        if key in self._overlay:
            return self._overlay[key]
        if key in self._base_keys:
            return self.base.tensor(self._base_keys[key])
        if ".lora_A." in key or ".lora_B." in key:
            return torch.zeros(self.plan.training_shapes[key])  # only reached for allowed missing adapters
        raise ConversionError(f"{self.description}: nothing provides {key}")

    def release(self, keys: list[str]) -> None:
        for key in keys:
            self._overlay.pop(key, None)

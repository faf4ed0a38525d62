"""From the training-time module's tensors to the plain model's: LoRA merged in fp32, then one cast.

The plan is made on the meta device, so it costs nothing at any size. The training-time module
(`apply_training_recipe(Sa2VAModel(config))`) is built there, peft's own `merge_and_unload` folds it into the plain
model, and because peft keeps the module objects it merges into (each LoRA layer's base layer, each
`modules_to_save` copy), the identity of every plain tensor tells which training-time tensor it comes from. So no
key is renamed by hand here: peft's naming conventions stay peft's.

Producing one plain tensor then reads only what it needs from a `TensorSource`: a direct copy, or, for a LoRA layer,
that one layer materialized in float32 with its adapter weights and merged by peft's `LoraLayer.merge` (the same
arithmetic `merge_and_unload` does), before the single cast to the output dtype. Frozen and trained tensors arrive
in whatever dtype ZeRO kept them; every one is cast explicitly.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field

import torch
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers.initialization import no_init_weights

from vesselseg.convert.errors import ConversionError
from vesselseg.convert.source import TensorSource
from vesselseg.model import Sa2VAConfig, Sa2VAModel, apply_training_recipe, merge_lora


@dataclass(frozen=True)
class PlainTensor:
    """One tensor of the Hugging Face folder and where it comes from."""

    key: str
    shape: torch.Size
    dtype: torch.dtype  # as built; floating tensors are cast to the output dtype
    source_key: str | None = None  # a training-time tensor copied as is
    lora_layer: str | None = None  # else: the training-time LoRA layer whose merged base layer holds it
    attribute: str = ""  # the parameter or buffer name inside that base layer


@dataclass
class MergePlan:
    config: Sa2VAConfig  # the plain model's config (tying switched off where training untied the embeddings)
    tensors: list[PlainTensor]  # in state-dict order, tied aliases left out as transformers leaves them out
    training_shapes: dict[str, torch.Size]  # the whole training-time state dict
    trainable: set[str]  # training-time keys of parameters the recipe trains: what an xtuner iter_N.pth holds
    training_aliases: dict[str, str]  # training-time key → the key it is tied to (same tensor)
    lora_layers: dict[str, nn.Module] = field(repr=False, default_factory=dict)  # meta copies, by training name
    untied: list[str] = field(default_factory=list)  # tied keys that training made distinct
    num_parameters: int = 0

    def source_keys(self, tensors: list[PlainTensor]) -> list[str]:
        """The training-time keys these plain tensors read."""
        keys: list[str] = []
        for tensor in tensors:
            if tensor.source_key is not None:
                keys.append(tensor.source_key)
            else:
                prefix = f"{tensor.lora_layer}."
                keys += [prefix + k for k in self.lora_layers[tensor.lora_layer].state_dict()]
        return list(dict.fromkeys(keys))


def training_module_on_meta(config: Sa2VAConfig) -> Sa2VAModel:
    with torch.device("meta"):
        return apply_training_recipe(Sa2VAModel(config))


def plan_merge(config: Sa2VAConfig) -> MergePlan:
    """What the plain model's state dict holds and where each tensor comes from, for `config`'s training recipe."""
    model = training_module_on_meta(config)
    training = model.state_dict(keep_vars=True)
    training_key: dict[int, str] = {}
    for key, tensor in training.items():
        training_key.setdefault(id(tensor), key)
    aliases = {key: training_key[id(t)] for key, t in training.items() if training_key[id(t)] != key}
    trainable = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    merged_into = {id(module.get_base_layer()): name for name, module in layers.items()}
    lora_layers = {name: copy.deepcopy(module) for name, module in layers.items()}

    plain = merge_lora(model)
    tied, untied = _tied_targets(plain)
    plain_config = copy.deepcopy(config)
    if untied:
        # peft's `modules_to_save` trained separate copies of embed_tokens and lm_head; if the config ties them,
        # loading would overwrite the trained lm_head with the embeddings. Plan again with the config untied, so
        # that both matrices are saved and the saved config says they are distinct.
        plain_config.text_config.tie_word_embeddings = False
        plain_config.tie_word_embeddings = False
        plan = plan_merge(plain_config)
        plan.untied = untied
        return plan
    seen: dict[int, str] = {}
    tensors: list[PlainTensor] = []
    for module_name, module in plain.named_modules():
        persistent = [
            (n, b) for n, b in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set
        ]
        for name, tensor in [*module.named_parameters(recurse=False), *persistent]:
            key = f"{module_name}.{name}" if module_name else name
            if id(tensor) in seen or key in tied:
                continue  # a tied alias: transformers saves the tensor once and ties it again on load
            seen[id(tensor)] = key
            entry = {"key": key, "shape": tensor.shape, "dtype": tensor.dtype}
            if id(module) in merged_into:
                tensors.append(PlainTensor(**entry, lora_layer=merged_into[id(module)], attribute=name))
            else:
                tensors.append(PlainTensor(**entry, source_key=training_key[id(tensor)]))
    return MergePlan(
        config=plain_config,
        tensors=tensors,
        training_shapes={k: t.shape for k, t in training.items()},
        trainable=trainable,
        training_aliases=aliases,
        lora_layers=lora_layers,
        num_parameters=sum(p.numel() for p in plain.parameters()),
    )


def _tied_targets(plain: nn.Module) -> tuple[set[str], list[str]]:
    """The config's tied targets (e.g. lm_head.weight), split into those still sharing their source's tensor and
    those training made distinct."""
    tied: set[str] = set()
    untied: list[str] = []
    for target, source in (getattr(plain, "all_tied_weights_keys", {}) or {}).items():
        try:
            shared = plain.get_parameter(target) is plain.get_parameter(source)
        except AttributeError:
            continue
        if shared:
            tied.add(target)
        else:
            untied.append(target)
    return tied, untied


def check_source_matches(plan: MergePlan, source: TensorSource, config_file: str) -> None:
    """The checkpoint must hold exactly the training-time tensors the config builds, with the same shapes."""
    have = source.shapes()
    want = plan.training_shapes
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if tuple(want[k]) != tuple(have[k]))
    if missing or unexpected or wrong:
        examples = [f"missing {k}" for k in missing[:3]] + [f"unexpected {k}" for k in unexpected[:3]]
        examples += [f"{k}: checkpoint {list(have[k])} vs config {list(want[k])}" for k in wrong[:3]]
        raise ConversionError(
            f"{source.description} does not match the model config {config_file}: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} of another shape (e.g. {'; '.join(examples)}); was it "
            "trained from another preset or recipe?"
        )


class PlainTensorReader:
    """Plain tensors as stored (or, for LoRA layers, as merged in float32); the writer casts them to the output
    dtype. Each LoRA layer is merged once, when its first tensor is asked for."""

    def __init__(self, plan: MergePlan, source: TensorSource):
        self.plan, self.source = plan, source
        self._merged: tuple[str, nn.Module] | None = None
        self._lock = threading.Lock()  # reads come from several worker threads

    def read(self, tensor: PlainTensor) -> torch.Tensor:
        with torch.no_grad():
            if tensor.source_key is not None:
                value = self.source.load(tensor.source_key)
            else:
                value = getattr(self._merged_layer(tensor.lora_layer).get_base_layer(), tensor.attribute).detach()
            if tuple(value.shape) != tuple(tensor.shape):
                raise ConversionError(
                    f"{self.source.description}: {tensor.key} has shape {list(value.shape)}, "
                    f"expected {list(tensor.shape)}"
                )
            return value

    def _merged_layer(self, name: str) -> nn.Module:
        with self._lock:
            return self._merge(name)

    def _merge(self, name: str) -> nn.Module:
        if self._merged is None or self._merged[0] != name:
            layer = copy.deepcopy(self.plan.lora_layers[name]).to_empty(device="cpu").float()
            state = {k: self.source.load(f"{name}.{k}").float() for k in layer.state_dict()}
            layer.load_state_dict(state, strict=True)
            layer.merge(safe_merge=True)  # peft's arithmetic, in float32; raises on NaN/inf
            self._merged = (name, layer)
        return self._merged[1]


def training_module(config: Sa2VAConfig, source: TensorSource) -> Sa2VAModel:
    """The module that trained, LoRA unmerged, in float32, with every tensor from `source`."""
    with no_init_weights():
        model = apply_training_recipe(Sa2VAModel(config)).float()
    with torch.no_grad():
        for key, target in model.state_dict(keep_vars=True).items():
            target.copy_(source.load(key))  # copy_ upcasts whatever dtype ZeRO stored
    return model.eval()

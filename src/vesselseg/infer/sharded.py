"""Device maps that spread one model copy over several GPUs, in accelerate's format.

`Sa2VAModel.forward` combines the inputs' tensors (image-token slots, `[SEG]` positions) with those of the token
embeddings, the projector, the final hidden states and SAM2 in plain tensor operations, which accelerate's hooks
do not move; so those parts (the hub) share the first GPU of the copy with the vision tower (whose first weight
defines `model.device`, where inputs go). Only whole decoder layers move. Two layouts:
  - balanced: layer counts from `strategy.balance_layers`, equal compute per GPU (what pipelining needs);
  - accelerate: accelerate's `get_balanced_memory` + `infer_auto_device_map` (what `device_map="auto"` computes),
    with `no_split_module_classes` keeping each decoder layer, the vision tower and SAM2 whole, `max_memory`
    leaving the planned headroom and the first GPU lightened by the hub it will also hold.
Either way the map is loaded by `from_pretrained(device_map=...)` or applied by `accelerate.dispatch_model`.
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = "language_model.model.layers"


def hub_prefixes(model: nn.Module) -> list[str]:
    """Module names that must sit on the copy's first GPU: everything except the decoder layers."""
    names = [name for name, _ in model.named_children() if name != "language_model"]
    names += [f"language_model.{name}" for name, _ in model.language_model.named_children() if name != "model"]
    names += [
        f"language_model.model.{name}" for name, _ in model.language_model.model.named_children() if name != "layers"
    ]
    return names


def no_split_classes(model: nn.Module) -> list[str]:
    return [
        type(model.language_model.model.layers[0]).__name__,
        type(model.vision_model).__name__,
        type(model.grounding_encoder).__name__,
    ]


def balanced_device_map(model: nn.Module, group: list[int], layers: list[int]) -> dict[str, int]:
    """Hub and vision tower on `group[0]`; `layers[i]` consecutive decoder layers on `group[i]`."""
    n_layers = len(model.language_model.model.layers)
    if len(group) != len(layers) or sum(layers) != n_layers:
        raise ValueError(f"layer split {layers} over GPUs {group} does not cover the model's {n_layers} layers")
    device_map = {name: group[0] for name in hub_prefixes(model)}
    index = 0
    for device, count in zip(group, layers):
        for _ in range(count):
            device_map[f"{LAYERS}.{index}"] = device
            index += 1
    return device_map


def accelerate_device_map(
    model: nn.Module, group: list[int], budgets: dict[int, int], dtype: torch.dtype
) -> dict[str, int]:
    """accelerate's balanced `infer_auto_device_map` over `group` within `budgets`, then the hub pinned to
    `group[0]`."""
    from accelerate.utils import compute_module_sizes, get_balanced_memory, infer_auto_device_map
    from accelerate.utils.modeling import clean_device_map

    sizes = compute_module_sizes(model, dtype=dtype)
    pinned = [p for p in hub_prefixes(model) if p not in ("vision_model", "mlp1", "language_model.model.embed_tokens")]
    max_memory = {device: budgets[device] for device in group}
    # The parts pinned below come after the layers in module order; keep their room free on the first GPU.
    max_memory[group[0]] -= sum(sizes.get(p, 0) for p in pinned)
    no_split = no_split_classes(model)
    max_memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    inferred = infer_auto_device_map(
        model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype, clean_result=False
    )
    if any(device not in group for device in inferred.values()):
        raise ValueError(
            f"the model does not fit GPUs {group} within {budgets}: accelerate placed {set(inferred.values())}"
        )
    device_map = _per_module(model, inferred)
    hub = hub_prefixes(model)
    for name in device_map:
        if any(name == p or name.startswith(p + ".") for p in hub):
            device_map[name] = group[0]
    return clean_device_map(device_map)


def _per_module(model: nn.Module, device_map: dict[str, int | str]) -> dict[str, int | str]:
    """The map expanded to every module holding tensors itself, so that parts of a mapped module can be moved."""
    expanded = {}
    for name, module in model.named_modules():
        if not name or not (list(module.parameters(recurse=False)) or list(module.buffers(recurse=False))):
            continue
        owner = max((key for key in device_map if key == "" or name == key or name.startswith(key + ".")), key=len)
        expanded[name] = device_map[owner]
    return expanded


def device_of(device_map: dict[str, int | str], tensor_name: str) -> int | str:
    """The device a parameter or buffer goes to: the map's longest matching module prefix."""
    matches = (key for key in device_map if key in ("", tensor_name) or tensor_name.startswith(key + "."))
    owner = max(matches, key=len, default=None)
    if owner is None:
        raise ValueError(f"device map has no entry for {tensor_name}")
    return device_map[owner]

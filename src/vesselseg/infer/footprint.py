"""What a model copy weighs and costs, in the three pieces the sharded layout moves around.

    hub      embeddings, projector, final norm, LM head, `text_hidden_fcs`, SAM2: on the copy's first GPU, because
             `Sa2VAModel.forward` mixes their tensors with the inputs' (the `[SEG]` positions, the image slots)
    vision   the vision tower, kept whole; also on the first GPU, where `model.device` (its first weight) says the
             inputs go
    layers   the LLM's decoder layers, whole each, spread over the copy's GPUs

Costs are multiply-accumulates per image (parameters × tokens each piece sees), enough to balance work across GPUs.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

# Chat markers, prompt and answer around the image tokens: a few dozen tokens whatever the tokenizer.
TEXT_TOKENS = 48
# SAM2 sees its input in 16-px patches at the deepest level, where most of its parameters work.
SAM2_STRIDE = 16


class Footprint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_bytes: int = Field(ge=0)
    vision_bytes: int = Field(ge=0)
    layer_bytes: int = Field(gt=0)
    n_layers: int = Field(ge=0)
    hub_cost: float = Field(0.0, ge=0)
    vision_cost: float = Field(0.0, ge=0)
    layer_cost: float = Field(1.0, gt=0)

    @property
    def weight_bytes(self) -> int:
        return self.hub_bytes + self.vision_bytes + self.n_layers * self.layer_bytes

    @property
    def first_bytes(self) -> int:
        """What must sit on a copy's first GPU whatever the split."""
        return self.hub_bytes + self.vision_bytes

    @classmethod
    def opaque(cls, weight_bytes: int, piece_bytes: int = 1 << 30) -> Footprint:
        """A model whose structure is unknown (an official folder's own code): treated as equal pieces, which is
        how accelerate's `device_map="auto"` spreads it."""
        pieces = max(1, math.ceil(weight_bytes / piece_bytes))
        return cls(hub_bytes=0, vision_bytes=0, layer_bytes=math.ceil(weight_bytes / pieces), n_layers=pieces)


def footprint_of(model, dtype, image_hw: tuple[int, int]) -> Footprint:
    """The footprint of a `Sa2VAModel` (on the meta device is enough) in `dtype`, for images of `image_hw`."""
    from accelerate.utils import compute_module_sizes

    from vesselseg.model.processing import tile_grid

    config = model.config
    sizes = compute_module_sizes(model, dtype=dtype)
    layers = model.language_model.model.layers
    vision_bytes = sizes["vision_model"]
    layer_bytes = sizes["language_model.model.layers.0"]
    hub_bytes = sizes[""] - vision_bytes - len(layers) * layer_bytes

    tile, patch = config.tile_size, config.vision_config.patch_size[0]
    columns, rows = tile_grid(image_hw[1], image_hw[0], tile, config.min_tiles, config.max_tiles)
    tiles = columns * rows + (1 if config.use_thumbnail and columns * rows > 1 else 0)
    image_tokens = tiles * config.tokens_per_tile
    sam2_tokens = (config.sam2_image_size // SAM2_STRIDE) ** 2

    def params(module) -> int:
        return sum(p.numel() for p in module.parameters())

    return Footprint(
        hub_bytes=hub_bytes,
        vision_bytes=vision_bytes,
        layer_bytes=layer_bytes,
        n_layers=len(layers),
        hub_cost=float(params(model.grounding_encoder) * sam2_tokens + params(model.mlp1) * image_tokens),
        vision_cost=float(params(model.vision_model) * tiles * ((tile // patch) ** 2 + 1)),
        layer_cost=float(params(layers[0]) * (image_tokens + TEXT_TOKENS)),
    )

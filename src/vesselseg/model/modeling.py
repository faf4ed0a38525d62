"""`Sa2VAModel`: Sa2VA's architecture assembled from stock transformers classes.

    image ─ tiles ─► vision_model (InternViT) ─► pixel shuffle ─► mlp1 ─┐ scattered into the
    prompt ──────────────────────────── token embeddings ───────────────┴► <IMG_CONTEXT> slots ─► language_model
    language_model's last hidden state at each [SEG] ─► text_hidden_fcs ─► sparse prompt ─┐
    image ─ resized square ─► grounding_encoder (SAM2) image encoder ─► mask decoder ◄─────┘ ─► mask logits
                                                  (optional, not Sa2VA: mask_refiner ─► logits at SAM2's input size)

Submodule names follow the official Sa2VA checkpoints (`vision_model`, `mlp1`, `language_model`,
`grounding_encoder`, `text_hidden_fcs`), so importing them is a key rename inside each part, not a re-plumbing.
Inside each part the keys are transformers' own (`InternVLVisionModel`, `Qwen2ForCausalLM`/`LlamaForCausalLM`,
`Sam2Model`). SAM2's memory modules for video are not built: images only.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, InternVLVisionModel, PreTrainedModel, Sam2Model
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from vesselseg.model.config import Sa2VAConfig
from vesselseg.model.fused_gelu import fuse_mlp_gelu
from vesselseg.model.losses import mask_losses

IGNORE_INDEX = -100
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Sa2VAOutput(ModelOutput):
    """Losses are present when their targets were given; `mask_logits` whenever the batch holds a `[SEG]`."""

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    mask_bce_loss: torch.Tensor | None = None
    mask_dice_loss: torch.Tensor | None = None
    mask_cldice_loss: torch.Tensor | None = None
    lm_logits: torch.Tensor | None = None  # (supervised tokens, vocab): only where labels are set
    mask_logits: torch.Tensor | None = None  # (all [SEG] in the batch, h, w) in batch order: SAM2's low-res
    # masks (a quarter of its input size), or at its input size with the mask refiner
    seg_counts: torch.Tensor | None = None  # (batch,) [SEG] tokens per sample


def pixel_shuffle(features: torch.Tensor, ratio: float) -> torch.Tensor:
    """(n, H, W, C) → (n, H·r, W·r, C/r²) for r = `ratio` < 1: each (1/r)×(1/r) patch block becomes one token.

    The channel order (row offset major, then column offset, then channel) is InternVL's, which its projector
    weights depend on.
    """
    n, height, width, channels = features.shape
    block = round(1 / ratio)
    features = features.reshape(n, height // block, block, width // block, block, channels)
    features = features.permute(0, 1, 3, 2, 4, 5)
    return features.reshape(n, height // block, width // block, block * block * channels)


class MaskRefiner(nn.Module):
    """Thin-vessel refinement head (not part of Sa2VA).

    SAM2's decoder draws masks at a quarter of its input size, where a 1–2 px vessel is a fraction of a cell and
    no choice of logits can draw it after bilinear upsampling. This head upsamples the logits to the input size
    and adds a correction computed by a few 3×3 convolutions from the (normalised) image and those logits. Its last
    convolution starts at zero, so an untrained head is exactly the bilinear upsampling the model did without it.
    """

    def __init__(self, channels: int, layers: int):
        super().__init__()
        body: list[nn.Module] = []
        width = 4  # RGB + the upsampled logits
        for _ in range(layers - 1):
            body += [nn.Conv2d(width, channels, 3, padding=1), nn.GELU()]
            width = channels
        self.body = nn.Sequential(*body)
        self.output = nn.Conv2d(channels, 1, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default (Kaiming-uniform) init for the body, zeros for the output convolution."""
        for module in self.body:
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(N, h, w) logits and (N, 3, S, S) images → (N, S, S) logits."""
        upsampled = F.interpolate(logits[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
        features = torch.cat([images.to(upsampled.dtype), upsampled], dim=1)
        # Channels-last: oneDNN's convolutions over so few channels at full image size ran twice as fast forward
        # and backward on the CPU (benchmarks/results/demo_profile.md); the values are the same.
        correction = self.output(self.body(features.contiguous(memory_format=torch.channels_last)))
        return (upsampled + correction)[:, 0]


class Sa2VAPreTrainedModel(PreTrainedModel):
    config: Sa2VAConfig
    config_class = Sa2VAConfig
    base_model_prefix = "sa2va"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _skip_keys_device_placement = ["past_key_values"]

    def _init_weights(self, module: nn.Module) -> None:
        # The refiner keeps its own init: the transformer's N(0, 0.02) is too small for a 3×3 conv over a few
        # channels to pass the image through (measured: it learned markedly slower) and a non-zero output would make
        # the untrained head change the masks. transformers visits only modules with parameters of their own (the
        # convolutions, not the MaskRefiner), so the refiner is reset when its last convolution comes up; this also
        # covers a refiner that from_pretrained adds to a folder saved without one.
        super()._init_weights(module)  # for the refiner's convolutions too, so seeded weights stay as they were
        refiner = getattr(self, "mask_refiner", None)
        if refiner is not None and module is refiner.output:
            refiner.reset_parameters()


class Sa2VAModel(Sa2VAPreTrainedModel):
    def __init__(self, config: Sa2VAConfig):
        super().__init__(config)
        for field in ("image_token_id", "seg_token_id"):
            if getattr(config, field) is None:
                raise ValueError(f"Sa2VAConfig.{field} is not set; take it from the tokenizer (see presets.py)")
        self.vision_model = InternVLVisionModel(config.vision_config)
        vit_dim = config.vision_config.hidden_size * round(1 / config.downsample_ratio) ** 2
        llm_dim = config.text_config.hidden_size
        self.mlp1 = nn.Sequential(
            nn.LayerNorm(vit_dim),
            nn.Linear(vit_dim, llm_dim),
            ACT2FN[config.projector_hidden_act],
            nn.Linear(llm_dim, llm_dim),
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.grounding_encoder = Sam2Model(config.sam2_config)
        self.text_hidden_fcs = nn.Sequential(
            nn.Linear(llm_dim, llm_dim), nn.ReLU(), nn.Linear(llm_dim, config.prompt_dim)
        )
        self.mask_refiner = None
        if config.mask_refiner_channels:
            self.mask_refiner = MaskRefiner(config.mask_refiner_channels, config.mask_refiner_layers)
        self.post_init()

    def compile_blocks(self, llm_layers: bool) -> None:
        """torch.compile in place, so state-dict keys and checkpoints are unchanged: InternViT whole, SAM2's
        image features (`get_sam2_features`) and, with `llm_layers`, each LLM decoder layer (LoRA inside; the
        layers share one graph)."""
        self.vision_model.compile()
        # Compiling the method rather than SAM2's encoder module lets Inductor drop what the encoder returns and
        # this model never reads (the FPN's positional encodings, the unprojected maps): 2 % of an sa2va-4b
        # step at micro-batch 32 on an H100 (benchmarks/results/train_profile.md).
        self.get_sam2_features = torch.compile(self.get_sam2_features)
        if llm_layers:
            for layer in self.language_model.get_decoder().layers:
                layer.compile()

    def fuse_encoder_gelu(self) -> int:
        """GELU inside the first matmul of each MLP in the image encoders, InternViT and SAM2's Hiera, where nothing
        is differentiated (see vesselseg.model.fused_gelu: tanh-form GELU on CUDA); returns how many MLPs."""
        return fuse_mlp_gelu(self.vision_model) + fuse_mlp_gelu(self.grounding_encoder.vision_encoder)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(tiles, 3, T, T) → (tiles, tokens_per_tile, llm hidden): ViT patches without CLS, shuffled, projected."""
        patches = self.vision_model(pixel_values=pixel_values.to(self.dtype)).last_hidden_state[:, 1:]
        side = round(patches.shape[1] ** 0.5)
        patches = patches.reshape(patches.shape[0], side, side, -1)
        tokens = pixel_shuffle(patches, self.config.downsample_ratio).flatten(1, 2)
        return self.mlp1(tokens)

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Token embeddings with every `<IMG_CONTEXT>` slot replaced by the next image token, in batch order."""
        embeddings = self.get_input_embeddings()(input_ids)
        image_tokens = self.get_image_features(pixel_values)
        slots = input_ids == self.config.image_token_id
        if slots.sum() != image_tokens.shape[0] * image_tokens.shape[1]:
            raise ValueError(
                f"{int(slots.sum())} <IMG_CONTEXT> tokens in input_ids but {image_tokens.shape[0]} tiles × "
                f"{image_tokens.shape[1]} image tokens; build inputs with Sa2VAProcessor"
            )
        return embeddings.masked_scatter(slots[..., None], image_tokens.to(embeddings.dtype))

    def normalize_sam2_input(self, sam2_pixel_values: torch.Tensor) -> torch.Tensor:
        """The processor's SAM2 image in the model's dtype; with `sam2_normalization == "model_dtype"` it arrives as
        0–255 values and is normalised here as the official `preprocess_image` does: /255, then − mean and / std, in
        the model's dtype, with the ImageNet mean and std rounded to bfloat16 (the official default argument)."""
        pixels = sam2_pixel_values.to(self.dtype)
        if self.config.sam2_normalization != "model_dtype":
            return pixels
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.bfloat16, device=pixels.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=torch.bfloat16, device=pixels.device)[:, None, None]
        pixels = pixels / 255.0
        pixels -= mean.to(pixels.dtype)
        pixels /= std.to(pixels.dtype)
        return pixels

    def get_sam2_features(self, sam2_pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """SAM2 image encoder → [1/4-res, 1/8-res (both projected for the decoder), 1/16-res embedding] maps."""
        sam = self.grounding_encoder
        features = sam.get_image_features(self.normalize_sam2_input(sam2_pixel_values)).fpn_hidden_states
        # Single images have no memory: SAM2 marks that by adding its learned no-memory embedding.
        features[-1] = features[-1] + sam.no_memory_embedding
        sizes = self.config.sam2_config.vision_config.backbone_feature_sizes
        batch = sam2_pixel_values.shape[0]
        return [f.permute(1, 2, 0).reshape(batch, -1, *size) for f, size in zip(features, sizes, strict=True)]

    def decode_masks(
        self, sam2_features: list[torch.Tensor], image_index: torch.Tensor, prompts: torch.Tensor
    ) -> torch.Tensor:
        """One low-res mask logit map (N, h, w) per prompt; `image_index` says which image each prompt is about.

        As in Sa2VA, the prompt encoder sees no points (one padding point) and the `[SEG]` embedding is appended
        to its sparse embeddings.
        """
        sam = self.grounding_encoder
        high_res_0, high_res_1, embedding = (f[image_index] for f in sam2_features)
        count = prompts.shape[0]
        no_points = torch.zeros(count, 1, 1, 2, dtype=embedding.dtype, device=embedding.device)
        padding_labels = -torch.ones(count, 1, 1, dtype=torch.int32, device=embedding.device)
        sparse, dense = sam.prompt_encoder(
            input_points=no_points, input_labels=padding_labels, input_boxes=None, input_masks=None
        )
        sparse = torch.cat([sparse, prompts[:, None, None, :].to(sparse.dtype)], dim=2)
        positional = sam.get_image_wide_positional_embeddings().repeat(count, 1, 1, 1)
        masks, iou, _, _ = sam.mask_decoder(
            image_embeddings=embedding,
            image_positional_embeddings=positional,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.config.sam2_multimask_output,
            high_resolution_features=[high_res_0, high_res_1],
        )
        masks, iou = masks[:, 0], iou[:, 0]
        if self.config.sam2_multimask_output:
            # Sa2VA keeps the candidate SAM2 rates best; the choice itself passes no gradient.
            return masks[torch.arange(count, device=masks.device), iou.argmax(dim=-1)]
        return masks[:, 0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        sam2_pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        gt_masks: list[torch.Tensor] | None = None,
    ) -> Sa2VAOutput:
        """`gt_masks[i]`: (number of [SEG] in sample i, H_i, W_i) at sample i's native size."""
        config = self.config
        embeddings = self.embed_inputs(input_ids, pixel_values)
        decoder = self.language_model.get_decoder()
        hidden = decoder(inputs_embeds=embeddings, attention_mask=attention_mask, use_cache=False).last_hidden_state

        losses = []
        lm_logits = lm_loss = None
        if labels is not None:
            # Next-token targets; logits only where supervised, which skips the image tokens' huge vocab rows.
            targets = labels[:, 1:]
            supervised = targets != IGNORE_INDEX
            lm_logits = self.get_output_embeddings()(hidden[:, :-1][supervised])
            lm_loss = F.cross_entropy(lm_logits.float(), targets[supervised])
            losses.append(config.lm_loss_weight * lm_loss)

        seg = input_ids == config.seg_token_id
        seg_counts = seg.sum(dim=1)
        if gt_masks is not None:
            for i, (count, masks) in enumerate(zip(seg_counts.tolist(), gt_masks, strict=True)):
                if masks.shape[0] != count:
                    raise ValueError(f"sample {i}: {count} [SEG] tokens but {masks.shape[0]} ground-truth masks")
        mask_logits = mask = None
        if seg.any():
            prompts = self.text_hidden_fcs(hidden[seg])
            image_index = torch.repeat_interleave(torch.arange(len(input_ids), device=seg.device), seg_counts)
            mask_logits = self.decode_masks(self.get_sam2_features(sam2_pixel_values), image_index, prompts)
            if self.mask_refiner is not None:
                mask_logits = self.mask_refiner(mask_logits, sam2_pixel_values[image_index])
            if gt_masks is not None:
                with_cldice = config.cldice_loss_weight > 0
                mask = mask_losses(
                    mask_logits,
                    [m for masks in gt_masks for m in masks],
                    config.mask_loss,
                    config.cldice_iterations if with_cldice else None,
                )
                losses += [config.bce_loss_weight * mask.bce, config.dice_loss_weight * mask.dice]
                if with_cldice:
                    losses.append(config.cldice_loss_weight * mask.cldice)

        return Sa2VAOutput(
            loss=torch.stack(losses).sum() if losses else None,
            lm_loss=lm_loss,
            mask_bce_loss=None if mask is None else mask.bce,
            mask_dice_loss=None if mask is None else mask.dice,
            mask_cldice_loss=None if mask is None else mask.cldice,
            lm_logits=lm_logits,
            mask_logits=mask_logits,
            seg_counts=seg_counts,
        )

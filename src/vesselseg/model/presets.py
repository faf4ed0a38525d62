"""Named model shapes: `tiny` for the CPU, and the official Sa2VA (InternVL2.5) sizes for GPU scale work.

The large presets copy the published layer counts and widths of each part (InternViT, the LLM, SAM2 Hiera-L)
with random weights. InternLM2.5 is not in transformers, so the 8B and 26B LLMs use the Llama layout, which has
the same parameter shapes once InternLM2's packed `wqkv` is split (the official-weights import does that).
Vocabulary sizes are the official ones: the InternVL2.5 tokenizer plus Sa2VA's five added tokens. Every preset
ships the small tokenizer from tokenizer.py (its ids fit in any of these vocabularies); real vocabularies come
with imported official weights.
"""

from collections.abc import Callable
from dataclasses import dataclass

from transformers import (
    InternVLVisionConfig,
    LlamaConfig,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2PromptEncoderConfig,
    Sam2VisionConfig,
)

from vesselseg.model import prompts
from vesselseg.model.config import Sa2VAConfig
from vesselseg.model.modeling import Sa2VAModel
from vesselseg.model.processing import Sa2VAProcessor
from vesselseg.model.tokenizer import VOCAB_SIZE, build_tokenizer

SA2VA_ADDED_TOKENS = 5  # [SEG], <p>, </p>, <vp>, </vp>
QWEN25_INTERNVL_VOCAB = 151674  # Qwen2.5 tokenizer + InternVL's image/box tokens
INTERNLM25_INTERNVL_VOCAB = 92553  # InternLM2.5 tokenizer + the same InternVL tokens


@dataclass(frozen=True)
class PublishedSize:
    """Sizes stated by the model cards this preset copies, in parameters."""

    model: str
    vision: str
    llm: str
    total_base_vlm: float  # the InternVL2.5 model Sa2VA starts from
    vision_params: float
    llm_params: float
    sam2_params: float = 224.4e6  # SAM2 Hiera-L, including its video memory modules (not built here)


PUBLISHED = {
    "sa2va-1b": PublishedSize("Sa2VA-1B", "InternViT-300M-448px-V2_5", "Qwen2.5-0.5B-Instruct", 0.94e9, 0.3e9, 0.49e9),
    "sa2va-4b": PublishedSize("Sa2VA-4B", "InternViT-300M-448px-V2_5", "Qwen2.5-3B-Instruct", 3.71e9, 0.3e9, 3.09e9),
    "sa2va-8b": PublishedSize("Sa2VA-8B", "InternViT-300M-448px-V2_5", "internlm2_5-7b-chat", 8.08e9, 0.3e9, 7.74e9),
    "sa2va-26b": PublishedSize("Sa2VA-26B", "InternViT-6B-448px-V2_5", "internlm2_5-20b-chat", 25.5e9, 5.5e9, 19.86e9),
}


def _internvit_300m() -> InternVLVisionConfig:
    return InternVLVisionConfig(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        attention_bias=True,
        norm_type="layer_norm",
        use_qk_norm=False,
        image_size=448,
        patch_size=14,
    )


def _internvit_6b() -> InternVLVisionConfig:
    # InternVL2.5-26B keeps 45 of InternViT-6B's 48 layers.
    return InternVLVisionConfig(
        hidden_size=3200,
        num_hidden_layers=45,
        num_attention_heads=25,
        intermediate_size=12800,
        attention_bias=False,
        norm_type="rms_norm",
        use_qk_norm=True,
        image_size=448,
        patch_size=14,
    )


def _qwen25(hidden: int, intermediate: int, layers: int, heads: int) -> Qwen2Config:
    # Untied: Sa2VA trains embed_tokens and lm_head as separate full copies, so they differ after training.
    return Qwen2Config(
        vocab_size=QWEN25_INTERNVL_VOCAB + SA2VA_ADDED_TOKENS,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        tie_word_embeddings=False,
    )


def _internlm25_as_llama(hidden: int, intermediate: int, layers: int, heads: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=INTERNLM25_INTERNVL_VOCAB + SA2VA_ADDED_TOKENS,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
    )


def _sam2_hiera_large() -> Sam2Config:
    return Sam2Config(
        vision_config=Sam2VisionConfig(
            backbone_config=Sam2HieraDetConfig(
                hidden_size=144,
                num_attention_heads=2,
                image_size=[1024, 1024],
                blocks_per_stage=[2, 6, 36, 4],
                embed_dim_per_stage=[144, 288, 576, 1152],
                num_attention_heads_per_stage=[2, 4, 8, 16],
                window_size_per_stage=[8, 4, 16, 8],
                global_attention_blocks=[23, 33, 43],
                window_positional_embedding_background_size=[7, 7],
            ),
            backbone_channel_list=[1152, 576, 288, 144],
            backbone_feature_sizes=[[256, 256], [128, 128], [64, 64]],
            fpn_hidden_size=256,
        ),
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=256, image_size=1024, patch_size=16),
        # Sa2VA leaves SAM2's stability-based fallback off; with it, eval and training would pick masks differently.
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=256, dynamic_multimask_via_stability=False),
    )


def _official(vision: InternVLVisionConfig, llm: PreTrainedConfig) -> dict:
    """An official release's shapes, with its mask upsampling and SAM2 input normalisation."""
    return dict(
        vision_config=vision,
        text_config=llm,
        sam2_config=_sam2_hiera_large(),
        mask_upsampling="via_sam2_input",
        sam2_normalization="model_dtype",
    )


def _tiny_sam2(image_size: int = 256, patch_stride: int = 4) -> Sam2Config:
    """`tiny`'s SAM2. Feature maps sit at patch_stride × 1, 2, 4 and the prompt grid at 4 × patch_stride; a kernel of
    2·stride − 1 overlaps neighbouring patches as SAM2's own 7×7 / 4 does."""
    grid = image_size // patch_stride
    sam2 = Sam2Config(
        vision_config=Sam2VisionConfig(
            backbone_config=Sam2HieraDetConfig(
                hidden_size=32,
                num_attention_heads=1,
                image_size=[image_size, image_size],
                patch_kernel_size=[2 * patch_stride - 1] * 2,
                patch_stride=[patch_stride] * 2,
                patch_padding=[patch_stride - 1] * 2,
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[32, 64, 128, 256],
                num_attention_heads_per_stage=[1, 1, 2, 4],
                window_size_per_stage=[8, 4, 8, 4],
                global_attention_blocks=[3],
            ),
            backbone_channel_list=[256, 128, 64, 32],
            backbone_feature_sizes=[[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]],
            fpn_hidden_size=64,
        ),
        prompt_encoder_config=Sam2PromptEncoderConfig(
            hidden_size=64, image_size=image_size, patch_size=4 * patch_stride
        ),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=64,
            mlp_dim=256,
            num_attention_heads=4,
            iou_head_hidden_dim=64,
            dynamic_multimask_via_stability=False,
        ),
    )
    return sam2


def _tiny(sam2: Sam2Config | None = None) -> dict:
    """About 1.7M parameters. Trained from scratch, so nothing is frozen and there is no LoRA; SAM2 at 256 px with its
    high-resolution features and the full-resolution loss, which DESIGN.md found necessary for thin vessels."""
    return dict(
        vision_config=InternVLVisionConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            attention_bias=True,
            image_size=112,
            patch_size=14,
        ),
        text_config=Qwen2Config(
            vocab_size=VOCAB_SIZE,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        ),
        sam2_config=sam2 or _tiny_sam2(),
        max_tiles=1,
        use_thumbnail=False,
        sam2_multimask_output=False,
        mask_loss="full_res",
        freeze_vision_model=False,
        freeze_llm=False,
        freeze_sam2_encoder=False,
        use_llm_lora=False,
    )


def _tiny_refined() -> dict:
    """`tiny` for 512-px fundus images, with the thin-vessel refiner Sa2VA does not have (docs/model.md): SAM2 reads the
    image at 512 px through an 8-px patch stride, so its encoder costs what `tiny`'s costs at 256 px, and the refiner
    draws the mask at 512 px, where 1–2 px vessels exist. What the demo fine-tunes."""
    return _tiny(_tiny_sam2(image_size=512, patch_stride=8)) | {"mask_refiner_channels": 16, "mask_refiner_layers": 3}


PRESETS: dict[str, Callable[[], dict]] = {
    "tiny": _tiny,
    "tiny-refined": _tiny_refined,
    "sa2va-1b": lambda: _official(_internvit_300m(), _qwen25(896, 4864, 24, 14)),
    "sa2va-4b": lambda: _official(_internvit_300m(), _qwen25(2048, 11008, 36, 16)),
    "sa2va-8b": lambda: _official(_internvit_300m(), _internlm25_as_llama(4096, 14336, 32, 32)),
    "sa2va-26b": lambda: _official(_internvit_6b(), _internlm25_as_llama(6144, 16384, 48, 48)),
}


def preset_config(name: str, tokenizer: PreTrainedTokenizerFast, **overrides) -> Sa2VAConfig:
    """The preset's config with the tokenizer's special-token ids; `overrides` replace any top-level field."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    fields = PRESETS[name]() | overrides
    if len(tokenizer) > fields["text_config"].vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the {name} vocabulary")
    # Presets are trained here, always with the fixed answer (vesselseg.finetune), so `auto` prediction forces it.
    fields = {"answer_mode": "forced", "fixed_answer": prompts.FORCED_ANSWER} | fields
    return Sa2VAConfig(
        image_token_id=tokenizer.convert_tokens_to_ids(prompts.IMG_CONTEXT),
        seg_token_id=tokenizer.convert_tokens_to_ids(prompts.SEG),
        **fields,
    )


def build_preset(name: str, **overrides) -> tuple[Sa2VAModel, Sa2VAProcessor]:
    """A randomly initialised model of the preset and its processor (tokenizer included)."""
    tokenizer = build_tokenizer()
    config = preset_config(name, tokenizer, **overrides)
    return Sa2VAModel(config), Sa2VAProcessor(config, tokenizer)


def parameter_counts(model: Sa2VAModel) -> dict[str, int]:
    """Parameters per part, in the order data flows through them."""
    sam = model.grounding_encoder
    llm = model.language_model
    embeddings = llm.get_input_embeddings().weight.numel()
    head = 0 if llm.config.tie_word_embeddings else llm.get_output_embeddings().weight.numel()
    counts = {
        "vision_model": model.vision_model,
        "mlp1": model.mlp1,
        "llm": llm,
        "sam2_image_encoder": sam.vision_encoder,
        "sam2_prompt_encoder": sam.prompt_encoder,
        "sam2_mask_decoder": sam.mask_decoder,
        "text_hidden_fcs": model.text_hidden_fcs,
    }
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in counts.items()}
    counts["llm_embeddings+head"] = embeddings + head
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts

"""`Sa2VAConfig`: the whole model as data — three stock transformers sub-configs plus the glue between them.

The sub-configs are the ones transformers' own classes read (`InternVLVisionConfig`, a Qwen2 or Llama config,
`Sam2Config`), so a preset is only numbers and `save_pretrained` writes one `config.json` that rebuilds everything.
The training surface (loss mode and weights, freezing, LoRA) lives here too, because a checkpoint is only
meaningful together with the recipe that trained it, and the fine-tuning stage reads it from one place.
"""

from typing import Literal

from transformers import CONFIG_MAPPING, AutoConfig, InternVLVisionConfig, PreTrainedConfig, Sam2Config

MaskLoss = Literal["official_lowres", "full_res"]
AnswerMode = Literal["generate", "forced"]
MaskUpsampling = Literal["direct", "via_sam2_input"]
Sam2Normalization = Literal["float32", "model_dtype"]

# Sa2VA leaves peft's `target_modules` unset, so xtuner wraps every Linear of the LLM except the output head:
# these names in the Qwen2 and Llama layouts (InternLM2's wqkv/wo/w1/w2/w3 once re-laid out).
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_LORA_MODULES_TO_SAVE = ["embed_tokens", "lm_head"]


class Sa2VAConfig(PreTrainedConfig):
    r"""
    vision_config: InternViT tower (`InternVLVisionConfig`); its `image_size` is the VLM tile size.
    text_config: the LLM, any `AutoModelForCausalLM` config (presets use `qwen2` and `llama`).
    sam2_config: SAM2 image encoder, prompt encoder and mask decoder (`Sam2Config`); the prompt encoder's
        `image_size` is the SAM2 input size and its `hidden_size` the width of the `[SEG]` prompt.
    downsample_ratio: pixel-shuffle factor between ViT patches and LLM image tokens (InternVL: 0.5).
    image_token_id / seg_token_id: ids of `<IMG_CONTEXT>` and `[SEG]` in the tokenizer saved with the model.
    min_tiles / max_tiles / use_thumbnail: InternVL dynamic tiling of the VLM image path.
    sam2_multimask_output: Sa2VA's SAM2 predicts three masks and keeps the one with the best predicted IoU;
        False uses the decoder's single-mask token instead.
    mask_refiner_channels / mask_refiner_layers: > 0 channels adds a thin-vessel refinement head, which Sa2VA does
        not have: a small CNN at SAM2's input resolution that reads the image and the bilinearly upsampled mask
        logits and adds a correction, so mask logits come out at SAM2's input size instead of a quarter of it.
        0 (every official preset) leaves the architecture as Sa2VA's.
    answer_mode: what `predict(mode="auto")` does: `generate` (greedy answer, a mask per [SEG] it writes: the official
        `predict_forward`) or `forced` (the answer `fixed_answer` teacher-forced), for models fine-tuned here with a
        fixed answer, whose answer is known.
    fixed_answer: the answer the model was fine-tuned to give (`prompts.FORCED_ANSWER`), None when unknown.
    prepend_bos: whether prompts start with the tokenizer's BOS, as the official tokenizer's `encode` does for
        the InternLM2-based releases (8B, 26B) and xtuner's training does for them.
    stop_token_ids: generation stops at any of these (official: the tokenizer's EOS, `<|im_end|>`, and for Qwen
        `<|endoftext|>`); None: the tokenizer's EOS alone.
    mask_upsampling: `direct` (low-res logits → image size, one bilinear step) or `via_sam2_input` (→ SAM2's input
        size, then → image size, both bilinear: the official two steps).
    sam2_normalization: `float32` (the processor normalises in float32) or `model_dtype` (the model normalises the
        resized uint8 values in its own dtype, dividing by 255, then subtracting and dividing by the ImageNet
        mean and std rounded to bfloat16: the official `preprocess_image`).
    mask_loss: `official_lowres` (BCE + Dice on SAM2's 1/4-resolution logits against the nearest-downsampled
        mask, as Sa2VA) or `full_res` (logits bilinearly upsampled to the mask's native size first).
    *_loss_weight: total = lm·LM + bce·BCE + dice·Dice + cldice·clDice (clDice only if its weight > 0).
    cldice_iterations: soft-skeleton iterations; about the largest vessel radius in pixels.
    freeze_*: which parts stay fixed during fine-tuning; the defaults are Sa2VA's recipe.
    use_llm_lora / lora_*: peft LoRA on the LLM (Sa2VA: r=128, alpha=256, dropout=0.05, embed_tokens and
        lm_head trained in full as `modules_to_save`).
    """

    model_type = "sa2va"
    sub_configs = {"vision_config": InternVLVisionConfig, "text_config": AutoConfig, "sam2_config": Sam2Config}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    sam2_config: dict | PreTrainedConfig | None = None

    downsample_ratio: float = 0.5
    projector_hidden_act: str = "gelu"
    image_token_id: int | None = None
    seg_token_id: int | None = None
    min_tiles: int = 1
    max_tiles: int = 12
    use_thumbnail: bool = True
    sam2_multimask_output: bool = True
    mask_refiner_channels: int = 0
    mask_refiner_layers: int = 3

    answer_mode: AnswerMode = "generate"
    fixed_answer: str | None = None
    prepend_bos: bool = False
    stop_token_ids: list[int] | None = None
    mask_upsampling: MaskUpsampling = "direct"
    sam2_normalization: Sam2Normalization = "float32"

    mask_loss: MaskLoss = "official_lowres"
    lm_loss_weight: float = 1.0
    bce_loss_weight: float = 2.0
    dice_loss_weight: float = 0.5
    cldice_loss_weight: float = 0.0
    cldice_iterations: int = 3

    freeze_vision_model: bool = True
    freeze_llm: bool = True
    freeze_projector: bool = False
    freeze_sam2_encoder: bool = True
    freeze_sam2_decoder: bool = False
    use_llm_lora: bool = True
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    lora_modules_to_save: list[str] | None = None

    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if isinstance(self.vision_config, dict):
            self.vision_config = InternVLVisionConfig(**self.vision_config)
        elif self.vision_config is None:
            self.vision_config = InternVLVisionConfig()
        if isinstance(self.text_config, dict):
            text = dict(self.text_config)
            self.text_config = CONFIG_MAPPING[text.pop("model_type", "qwen2")](**text)
        elif self.text_config is None:
            self.text_config = CONFIG_MAPPING["qwen2"]()
        if isinstance(self.sam2_config, dict):
            self.sam2_config = Sam2Config(**self.sam2_config)
        elif self.sam2_config is None:
            self.sam2_config = Sam2Config()
        if self.lora_target_modules is None:
            self.lora_target_modules = list(DEFAULT_LORA_TARGETS)
        if self.mask_refiner_channels and self.mask_refiner_layers < 2:
            raise ValueError(f"mask_refiner_layers must be at least 2, not {self.mask_refiner_layers}")
        if self.answer_mode == "forced" and not self.fixed_answer:
            raise ValueError("answer_mode forced needs fixed_answer, the answer the model was fine-tuned to give")
        if self.lora_modules_to_save is None:
            self.lora_modules_to_save = list(DEFAULT_LORA_MODULES_TO_SAVE)
        super().__post_init__(**kwargs)

    @property
    def tile_size(self) -> int:
        return self.vision_config.image_size[0]

    @property
    def sam2_image_size(self) -> int:
        return self.sam2_config.prompt_encoder_config.image_size

    @property
    def prompt_dim(self) -> int:
        return self.sam2_config.prompt_encoder_config.hidden_size

    @property
    def tokens_per_tile(self) -> int:
        patches_per_side = self.tile_size // self.vision_config.patch_size[0]
        return int(patches_per_side * self.downsample_ratio) ** 2

"""Official `config.json` → native `Sa2VAConfig`.

    vision_config (InternVisionConfig)  → InternVLVisionConfig   (qkv_bias → attention_bias, qk_normalization →
                                                                  use_qk_norm, force_image_size → image_size)
    llm_config (Qwen2Config)            → Qwen2Config             (same fields)
    llm_config (InternLM2Config)        → LlamaConfig             (bias → attention_bias; MLP never has a bias)
    rope_theta + rope_scaling           → rope_parameters         (dynamic NTK / linear kept, factor included)
    SAM2 (not in config.json)           → Hiera-L as in presets   (Sa2VA's sam2.py hard-codes Hiera-L)

Official options the native model does not implement (another ViT layer than the last, the transposing `v1`
pixel shuffle, LoRA-wrapped weights, tied embeddings) are refused here, before any tensor is read.
"""

import json
from pathlib import Path
from typing import Any

from transformers import (
    InternVLVisionConfig,
    LlamaConfig,
    PreTrainedConfig,
    Qwen2Config,
    Sam2Config,
)

from vesselseg.model.config import Sa2VAConfig
from vesselseg.model.official.catalog import OFFICIAL_CONFIGS
from vesselseg.model.official.errors import OfficialImportError
from vesselseg.model.official.families import Family, detect_family
from vesselseg.model.presets import PRESETS

# The Sa2VA templates whose turns read `<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`, as
# `vesselseg.model.prompts` writes them.
IM_START_TEMPLATES = frozenset({"qwen_chat", "internlm2_chat", "internvl2_5"})


def read_official_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise OfficialImportError(f"{folder}: no config.json; point src at an official Sa2VA Hugging Face folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise OfficialImportError(f"{path}: not valid JSON ({err})") from err


def check_supported(official: dict[str, Any]) -> None:
    """Refuses official options the native model does not implement."""
    unsupported = {
        "select_layer": (official.get("select_layer", -1), -1, "the native model reads the ViT's last layer"),
        "ps_version": (official.get("ps_version", "v1"), "v2", "v1 pixel shuffle transposes the image"),
        "use_backbone_lora": (official.get("use_backbone_lora", 0), 0, "merge LoRA into the weights first"),
        "use_llm_lora": (official.get("use_llm_lora", 0), 0, "merge LoRA into the weights first"),
        "llm_config.tie_word_embeddings": (
            official["llm_config"].get("tie_word_embeddings", False),
            False,
            "Sa2VA unties embed_tokens and lm_head",
        ),
    }
    for field, (value, supported, why) in unsupported.items():
        if value != supported:
            raise OfficialImportError(f"config.json: {field} is {value!r}; only {supported!r} is supported ({why})")


def tile_size(official: dict[str, Any]) -> int:
    return int(official.get("force_image_size") or official["vision_config"]["image_size"])


def vision_config(official: dict[str, Any]) -> InternVLVisionConfig:
    vision = official["vision_config"]
    return InternVLVisionConfig(
        hidden_size=vision["hidden_size"],
        num_hidden_layers=vision["num_hidden_layers"],
        num_attention_heads=vision["num_attention_heads"],
        intermediate_size=vision["intermediate_size"],
        hidden_act=vision.get("hidden_act", "gelu"),
        attention_bias=vision.get("qkv_bias", False),
        use_qk_norm=vision.get("qk_normalization", True),
        norm_type=vision.get("norm_type", "rms_norm"),
        layer_norm_eps=vision.get("layer_norm_eps", 1e-6),
        image_size=tile_size(official),
        patch_size=vision.get("patch_size", 14),
        num_channels=vision.get("num_channels", 3),
        layer_scale_init_value=vision.get("initializer_factor", 0.1),
    )


def rope_parameters(llm: dict[str, Any]) -> dict[str, Any]:
    """transformers' `rope_parameters` from the official `rope_theta` and `rope_scaling` (`type` or `rope_type`)."""
    theta = float(llm.get("rope_theta", 10000.0))
    scaling = llm.get("rope_scaling")
    if not scaling:
        return {"rope_type": "default", "rope_theta": theta}
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind not in ("dynamic", "linear"):
        raise OfficialImportError(f"config.json: llm_config.rope_scaling type {kind!r} is not dynamic or linear")
    return {"rope_type": kind, "factor": float(scaling["factor"]), "rope_theta": theta}


def text_config(official: dict[str, Any], family: Family) -> PreTrainedConfig:
    llm = official["llm_config"]
    common = {
        "vocab_size": llm["vocab_size"],
        "hidden_size": llm["hidden_size"],
        "intermediate_size": llm["intermediate_size"],
        "num_hidden_layers": llm["num_hidden_layers"],
        "num_attention_heads": llm["num_attention_heads"],
        "num_key_value_heads": llm.get("num_key_value_heads") or llm["num_attention_heads"],
        "hidden_act": llm.get("hidden_act", "silu"),
        "max_position_embeddings": llm.get("max_position_embeddings", 32768),
        "rms_norm_eps": llm.get("rms_norm_eps", 1e-6),
        "rope_parameters": rope_parameters(llm),
        "tie_word_embeddings": False,
        "bos_token_id": llm.get("bos_token_id"),
        "eos_token_id": llm.get("eos_token_id"),
        "pad_token_id": llm.get("pad_token_id"),
    }
    if family.native_model_type == "qwen2":
        return Qwen2Config(
            **common,
            use_sliding_window=llm.get("use_sliding_window", False),
            sliding_window=llm.get("sliding_window"),
            max_window_layers=llm.get("max_window_layers", llm["num_hidden_layers"]),
        )
    # InternLM2Config defaults `bias` to True; its wqkv and wo share it, its feed-forward never has one.
    return LlamaConfig(**common, attention_bias=llm.get("bias", True), mlp_bias=False)


def hiera_large() -> Sam2Config:
    """SAM2 Hiera-L exactly as the native presets build it."""
    return PRESETS["sa2va-1b"]()["sam2_config"]


def sa2va_config(
    official: dict[str, Any],
    image_token_id: int,
    seg_token_id: int,
    sam2_config: Sam2Config | None = None,
    prepend_bos: bool = False,
    stop_token_ids: list[int] | None = None,
) -> Sa2VAConfig:
    """The native config of an official release; the recipe fields keep Sa2VA's defaults, and inference behaves as
    the official `predict_forward`: generated answers, BOS and stop tokens as its tokenizer and template have them,
    masks upsampled through SAM2's input size, SAM2's input normalised in the model's dtype."""
    family = detect_family(official)
    check_supported(official)
    return Sa2VAConfig(
        vision_config=vision_config(official),
        text_config=text_config(official, family),
        sam2_config=sam2_config if sam2_config is not None else hiera_large(),
        downsample_ratio=official.get("downsample_ratio", 0.5),
        min_tiles=official.get("min_dynamic_patch", 1),
        max_tiles=official.get("max_dynamic_patch", 12),
        use_thumbnail=official.get("use_thumbnail", True),
        image_token_id=image_token_id,
        seg_token_id=seg_token_id,
        answer_mode="generate",
        prepend_bos=prepend_bos,
        stop_token_ids=stop_token_ids,
        mask_upsampling="via_sam2_input",
        sam2_normalization="model_dtype",
    )


# Official field → the native config attribute it becomes, for the fields that decide tensor shapes.
_VISION_SHAPE_FIELDS = {
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "qkv_bias": "attention_bias",
    "qk_normalization": "use_qk_norm",
    "norm_type": "norm_type",
    "patch_size": "patch_size",
}
_LLM_SHAPE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)


def architecture(official: dict[str, Any]) -> dict[str, Any]:
    """The fields that decide the tensors' shapes (vocabulary aside), with the official defaults filled in."""
    vision = vision_config(official)
    text = text_config(official, detect_family(official))
    fields: dict[str, Any] = {
        "llm_config.architectures": official["llm_config"]["architectures"][0],
        "force_image_size": tile_size(official),
        "downsample_ratio": official.get("downsample_ratio", 0.5),
    }
    fields |= {f"llm_config.{key}": getattr(text, key) for key in _LLM_SHAPE_FIELDS}
    fields |= {f"vision_config.{key}": getattr(vision, attr) for key, attr in _VISION_SHAPE_FIELDS.items()}
    return fields


def identify(official: dict[str, Any]) -> str | None:
    """The catalog name of the release with this architecture, None for shapes no release has."""
    found = architecture(official)
    for name, known in OFFICIAL_CONFIGS.items():
        if architecture(known) == found:
            return name
    return None


def architecture_differences(official: dict[str, Any], name: str) -> list[str]:
    expected, found = architecture(OFFICIAL_CONFIGS[name]), architecture(official)
    return [
        f"{key}: {found[key]!r} (the release has {expected[key]!r})" for key in expected if expected[key] != found[key]
    ]


def template_matches(official: dict[str, Any]) -> bool:
    """Whether the official chat template is the `<|im_start|>` turn format the native processor writes."""
    return str(official.get("template", "")).replace("-", "_") in IM_START_TEMPLATES

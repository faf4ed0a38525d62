"""The official Sa2VA releases as data: a representative `config.json` for each, and their published sizes.

Written from public facts (the Sa2VA model zoo, the InternVL2.5 / InternVL3 model cards, the Qwen2.5 and
InternLM2.5 configs), not copied from the releases, which cannot be downloaded here. Only the fields the import
reads are certain to matter; the rest follow the official layout so that the dicts read like the real files.
The import uses these to name the release a folder holds (`identify`) and to check `preset=<name>`; the
benchmark builds each on the meta device to print the parameter count an import produces.
"""

from typing import Any

from vesselseg.model.presets import PUBLISHED, PublishedSize

# Sa2VA adds [SEG], <p>, </p>, <vp>, </vp> after InternVL's <img>, </img>, <IMG_CONTEXT>, <quad>, </quad>, <ref>,
# </ref>, <box>, </box>, so these ids follow from each base tokenizer's size.
QWEN2_TOKENS = {"<img>": 151665, "</img>": 151666, "<IMG_CONTEXT>": 151667, "[SEG]": 151674}
INTERNLM2_TOKENS = {"<img>": 92544, "</img>": 92545, "<IMG_CONTEXT>": 92546, "[SEG]": 92553}
QWEN2_VOCAB = 151679
INTERNLM2_VOCAB = 92558

_DYNAMIC_ROPE = {"type": "dynamic", "rope_type": "dynamic", "factor": 2.0}


def _internvit_300m() -> dict[str, Any]:
    return {
        "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": 1024,
        "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "num_channels": 3,
        "image_size": 448, "patch_size": 14, "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6, "hidden_act": "gelu", "dropout": 0.0, "attention_dropout": 0.0,
        "drop_path_rate": 0.0, "initializer_factor": 1.0, "initializer_range": 0.02, "use_flash_attn": True,
    }  # fmt: skip


def _internvit_6b() -> dict[str, Any]:
    # InternVL2.5-26B keeps 45 of InternViT-6B's 48 layers.
    return _internvit_300m() | {
        "hidden_size": 3200, "intermediate_size": 12800, "num_attention_heads": 25, "num_hidden_layers": 45,
        "qkv_bias": False, "qk_normalization": True, "norm_type": "rms_norm", "initializer_factor": 0.1,
    }  # fmt: skip


def _qwen25(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, eps: float) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": QWEN2_VOCAB,
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "hidden_act": "silu",
        "max_position_embeddings": 32768, "rms_norm_eps": eps, "rope_theta": 1000000.0, "rope_scaling": _DYNAMIC_ROPE,
        "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": layers,
        "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645, "attention_dropout": 0.0,
        "initializer_range": 0.02, "use_cache": True, "torch_dtype": "bfloat16",
    }  # fmt: skip


def _internlm25(hidden: int, intermediate: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "vocab_size": INTERNLM2_VOCAB,
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": 8, "hidden_act": "silu", "bias": False,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "dynamic", "factor": 2.0}, "tie_word_embeddings": False, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 2, "initializer_range": 0.02, "attn_implementation": "eager",
        "use_cache": True, "torch_dtype": "bfloat16",
    }  # fmt: skip


def _sa2va(vision: dict[str, Any], llm: dict[str, Any], template: str) -> dict[str, Any]:
    return {
        "architectures": ["Sa2VAChatModel"], "model_type": "sa2va_chat",
        "auto_map": {"AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig",
                     "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel",
                     "AutoModelForCausalLM": "modeling_sa2va_chat.Sa2VAChatModel"},
        "vision_config": vision, "llm_config": llm, "template": template, "downsample_ratio": 0.5,
        "force_image_size": 448, "select_layer": -1, "ps_version": "v2", "dynamic_image_size": True,
        "use_thumbnail": True, "min_dynamic_patch": 1, "max_dynamic_patch": 12, "pad2square": False,
        "use_backbone_lora": 0, "use_llm_lora": 0, "torch_dtype": "bfloat16",
    }  # fmt: skip


OFFICIAL_CONFIGS: dict[str, dict[str, Any]] = {
    "sa2va-1b": _sa2va(_internvit_300m(), _qwen25(896, 4864, 24, 14, 2, 1e-6), "qwen_chat"),
    "sa2va-4b": _sa2va(_internvit_300m(), _qwen25(2048, 11008, 36, 16, 2, 1e-6), "qwen_chat"),
    "sa2va-8b": _sa2va(_internvit_300m(), _internlm25(4096, 14336, 32, 32), "internlm2_chat"),
    "sa2va-26b": _sa2va(_internvit_6b(), _internlm25(6144, 16384, 48, 48), "internlm2_chat"),
    "sa2va-internvl3-2b": _sa2va(_internvit_300m(), _qwen25(1536, 8960, 28, 12, 2, 1e-6), "qwen_chat"),
    "sa2va-internvl3-8b": _sa2va(_internvit_300m(), _qwen25(3584, 18944, 28, 28, 4, 1e-6), "qwen_chat"),
    "sa2va-internvl3-14b": _sa2va(_internvit_300m(), _qwen25(5120, 13824, 48, 40, 8, 1e-5), "qwen_chat"),
}

# InternVL3 sizes are those its Hugging Face pages state (safetensors totals); LLM sizes from the Qwen2.5 cards.
PUBLISHED_SIZES: dict[str, PublishedSize] = {
    **PUBLISHED,
    "sa2va-internvl3-2b": PublishedSize(
        "Sa2VA-InternVL3-2B", "InternViT-300M-448px-V2_5", "Qwen2.5-1.5B", 2.09e9, 0.3e9, 1.54e9
    ),
    "sa2va-internvl3-8b": PublishedSize(
        "Sa2VA-InternVL3-8B", "InternViT-300M-448px-V2_5", "Qwen2.5-7B", 7.94e9, 0.3e9, 7.61e9
    ),
    "sa2va-internvl3-14b": PublishedSize(
        "Sa2VA-InternVL3-14B", "InternViT-300M-448px-V2_5", "Qwen2.5-14B", 15.1e9, 0.3e9, 14.7e9
    ),
}


def release_tokens(name: str) -> dict[str, int]:
    """The ids the release's tokenizer gives `<img>`, `</img>`, `<IMG_CONTEXT>` and `[SEG]`."""
    llm = OFFICIAL_CONFIGS[name]["llm_config"]["architectures"][0]
    return INTERNLM2_TOKENS if llm == "InternLM2ForCausalLM" else QWEN2_TOKENS

"""What each tensor of an official Sa2VA checkpoint becomes in the native model: naming rules per part.

The official folder holds `Sa2VAChatModel`'s state dict: InternViT under `vision_model.`, the projector `mlp1.`,
the LLM under `language_model.`, SAM2 under `grounding_encoder.sam2_model.` with the original
facebookresearch/sam2 names, and `text_hidden_fcs.`. The native model keeps the part prefixes and uses
transformers' names inside them; the renames follow transformers' own conversion scripts
(`convert_internvl_weights_to_hf.py`, `convert_sam2_to_hf.py`), rewritten here as explicit rules:

- InternViT: `attn.qkv` (rows q | k | v) → `q_proj`, `k_proj`, `v_proj`; `attn.proj` → `projection_layer`;
  `norm1/2` → `layernorm_before/after`; `ls1/2` → `lambda_1/2`; `class_embedding` → `cls_token`.
- InternLM2 → Llama layout: `wqkv` rows are grouped per key/value head (that head's queries, then its key,
  then its value) and are regrouped into `q_proj`, `k_proj`, `v_proj`; `wo` → `o_proj`; `w1/w3/w2` →
  `gate/up/down_proj`; `attention_norm/ffn_norm` → `input/post_attention_layernorm`; `output` → `lm_head`.
- Qwen2, `mlp1`, `text_hidden_fcs`: same names.
- SAM2: `image_encoder.trunk` → `vision_encoder.backbone`, `norm*` → `layer_norm*`, MLP `layers.i` →
  `proj_in` / `layers.*` / `proj_out`, attention `out_proj` → `o_proj`, the four `point_embeddings` → rows of
  `point_embed`, the prompt encoder's Gaussian matrix also feeds `shared_image_embedding`, `no_mem_embed` →
  `no_memory_embedding`. SAM2's video memory (memory attention and encoder, object pointers, mask downsampler,
  their embeddings) is ignored by design: the native model segments single images and has no such modules
  (transformers' own `Sam2Model` ignores the same keys on load).

Rules are tried in order and the first full match wins; a key no rule matches is reported, never dropped.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from vesselseg.model.config import Sa2VAConfig
from vesselseg.model.official.families import Family

Transform = Callable[[torch.Tensor], torch.Tensor]

SAM2_VIDEO = "SAM2 video memory (images only: the native model has no memory modules)"
DERIVED_BUFFER = "rotary frequencies, recomputed from the config"


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass(frozen=True)
class Piece:
    """One native tensor (or the `part`-th dim-0 block of it) made from one source tensor."""

    target: str
    how: str  # rename | copy | qkv:<q|k|v> | wqkv:<q|k|v> | concat:<part>
    take: Transform = _same
    part: int | None = None


@dataclass(frozen=True)
class KeyMap:
    pieces: dict[str, list[Piece]]  # source key → what it becomes
    ignored: dict[str, str]  # source key → why it is not imported
    unmatched: list[str]  # source keys no rule knows


Handler = Callable[[re.Match], list[Piece] | str]
Rule = tuple[re.Pattern, Handler]


def _rename(template: str) -> Handler:
    return lambda match: [Piece(match.expand(template), "rename")]


def _ignore(reason: str) -> Handler:
    return lambda match: reason


def _third(index: int, tensor: torch.Tensor) -> torch.Tensor:
    rows = tensor.shape[0]
    if rows % 3:
        raise ValueError(f"{rows} rows do not split into equal q, k, v")
    return tensor[index * rows // 3 : (index + 1) * rows // 3]


def _vit_qkv(match: re.Match) -> list[Piece]:
    target = match.expand(r"vision_model.encoder.layer.\1.attention.{}_proj.\2")
    return [Piece(target.format(name), f"qkv:{name}", partial(_third, i)) for i, name in enumerate("qkv")]


def split_wqkv(tensor: torch.Tensor, which: str, heads: int, kv_heads: int, head_dim: int) -> torch.Tensor:
    """InternLM2's packed rows, `(kv_heads, heads/kv_heads queries + key + value, head_dim)`, → q, k or v rows.

    Query head `h` is the `h % groups`-th query of key/value head `h // groups`, which is the order Llama's
    grouped-query attention expects.
    """
    groups = heads // kv_heads
    expected = (heads + 2 * kv_heads) * head_dim
    if tensor.shape[0] != expected:
        raise ValueError(f"{tensor.shape[0]} rows, but (heads + 2·kv_heads)·head_dim = {expected}")
    grouped = tensor.reshape(kv_heads, groups + 2, head_dim, *tensor.shape[1:])
    if which == "q":
        return grouped[:, :groups].reshape(heads * head_dim, *tensor.shape[1:])
    slot = groups if which == "k" else groups + 1
    return grouped[:, slot].reshape(kv_heads * head_dim, *tensor.shape[1:])


def _wqkv(heads: int, kv_heads: int, head_dim: int) -> Handler:
    def handle(match: re.Match) -> list[Piece]:
        target = match.expand(r"language_model.model.layers.\1.self_attn.{}_proj.\2")
        return [
            Piece(target.format(name), f"wqkv:{name}", partial(split_wqkv, which=name, heads=heads,
                                                                kv_heads=kv_heads, head_dim=head_dim))
            for name in "qkv"
        ]  # fmt: skip

    return handle


def _point_embedding(match: re.Match) -> list[Piece]:
    part = int(match.group(1))
    return [Piece("grounding_encoder.prompt_encoder.point_embed.weight", f"concat:{part}", part=part)]


def _gaussian_matrix(match: re.Match) -> list[Piece]:
    return [
        Piece("grounding_encoder.prompt_encoder.shared_embedding.positional_embedding", "rename"),
        Piece("grounding_encoder.shared_image_embedding.positional_embedding", "copy"),
    ]


V, TV = r"vision_model\.encoder\.layers\.(\d+)\.", r"vision_model.encoder.layer.\1."
VISION_RULES: list[tuple[str, Handler]] = [
    (r"vision_model\.embeddings\.class_embedding", _rename("vision_model.embeddings.cls_token")),
    (r"vision_model\.embeddings\.position_embedding", _rename("vision_model.embeddings.position_embeddings")),
    (r"vision_model\.embeddings\.patch_embedding\.(weight|bias)",
     _rename(r"vision_model.embeddings.patch_embeddings.projection.\1")),
    (V + r"attn\.qkv\.(weight|bias)", _vit_qkv),
    (V + r"attn\.proj\.(weight|bias)", _rename(TV + r"attention.projection_layer.\2")),
    (V + r"attn\.(q_norm|k_norm)\.weight", _rename(TV + r"attention.\2.weight")),
    (V + r"mlp\.(fc1|fc2)\.(weight|bias)", _rename(TV + r"mlp.\2.\3")),
    (V + r"norm1\.(weight|bias)", _rename(TV + r"layernorm_before.\2")),
    (V + r"norm2\.(weight|bias)", _rename(TV + r"layernorm_after.\2")),
    (V + r"ls([12])", _rename(TV + r"lambda_\2")),
    # The projector and the [SEG] head keep their names.
    (r"mlp1\.(.+)", _rename(r"mlp1.\1")),
    (r"text_hidden_fcs\.(.+)", _rename(r"text_hidden_fcs.\1")),
]  # fmt: skip

QWEN2_RULES: list[tuple[str, Handler]] = [
    (r"language_model\.model\.(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq", _ignore(DERIVED_BUFFER)),
    (r"language_model\.(.+)", _rename(r"language_model.\1")),
]

L, TL = r"language_model\.model\.layers\.(\d+)\.", r"language_model.model.layers.\1."


def _internlm2_rules(heads: int, kv_heads: int, head_dim: int) -> list[tuple[str, Handler]]:
    return [
        (L + r"attention\.rotary_emb\.(inv_freq|cos_cached|sin_cached)", _ignore(DERIVED_BUFFER)),
        (r"language_model\.model\.tok_embeddings\.weight", _rename("language_model.model.embed_tokens.weight")),
        (r"language_model\.model\.norm\.weight", _rename("language_model.model.norm.weight")),
        (r"language_model\.output\.weight", _rename("language_model.lm_head.weight")),
        (L + r"attention\.wqkv\.(weight|bias)", _wqkv(heads, kv_heads, head_dim)),
        (L + r"attention\.wo\.(weight|bias)", _rename(TL + r"self_attn.o_proj.\2")),
        (L + r"feed_forward\.w1\.weight", _rename(TL + "mlp.gate_proj.weight")),
        (L + r"feed_forward\.w3\.weight", _rename(TL + "mlp.up_proj.weight")),
        (L + r"feed_forward\.w2\.weight", _rename(TL + "mlp.down_proj.weight")),
        (L + r"attention_norm\.weight", _rename(TL + "input_layernorm.weight")),
        (L + r"ffn_norm\.weight", _rename(TL + "post_attention_layernorm.weight")),
    ]


S, T = r"grounding_encoder\.sam2_model\.", "grounding_encoder."
B, TB = S + r"image_encoder\.trunk\.", T + "vision_encoder.backbone."
D, TD = S + r"sam_mask_decoder\.", T + "mask_decoder."
P, TP = S + r"sam_prompt_encoder\.", T + "prompt_encoder."
ATTENTION = r"(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
THREE_LAYER_MLPS = r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)"
SAM2_RULES: list[tuple[str, Handler]] = [
    (S + r"(memory_attention|memory_encoder|mask_downsample|obj_ptr_proj|obj_ptr_tpos_proj)\..+", _ignore(SAM2_VIDEO)),
    (S + r"(maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|no_obj_embed_spatial)", _ignore(SAM2_VIDEO)),
    (S + r"no_mem_embed", _rename(T + "no_memory_embedding")),
    # Hiera trunk
    (B + r"(pos_embed|pos_embed_window)", _rename(TB + r"\1")),
    (B + r"patch_embed\.proj\.(weight|bias)", _rename(TB + r"patch_embed.projection.\1")),
    (B + r"blocks\.(\d+)\.norm([12])\.(weight|bias)", _rename(TB + r"blocks.\1.layer_norm\2.\3")),
    (B + r"blocks\.(\d+)\.(attn\.qkv|attn\.proj|proj)\.(weight|bias)", _rename(TB + r"blocks.\1.\2.\3")),
    (B + r"blocks\.(\d+)\.mlp\.layers\.0\.(weight|bias)", _rename(TB + r"blocks.\1.mlp.proj_in.\2")),
    (B + r"blocks\.(\d+)\.mlp\.layers\.1\.(weight|bias)", _rename(TB + r"blocks.\1.mlp.proj_out.\2")),
    # FPN neck
    (S + r"image_encoder\.neck\.convs\.(\d+)\.conv\.(weight|bias)", _rename(T + r"vision_encoder.neck.convs.\1.\2")),
    # prompt encoder
    (P + r"pe_layer\.positional_encoding_gaussian_matrix", _gaussian_matrix),
    (P + r"point_embeddings\.(\d+)\.weight", _point_embedding),
    (P + r"(not_a_point_embed|no_mask_embed)\.weight", _rename(TP + r"\1.weight")),
    (P + r"mask_downscaling\.0\.(weight|bias)", _rename(TP + r"mask_embed.conv1.\1")),
    (P + r"mask_downscaling\.1\.(weight|bias)", _rename(TP + r"mask_embed.layer_norm1.\1")),
    (P + r"mask_downscaling\.3\.(weight|bias)", _rename(TP + r"mask_embed.conv2.\1")),
    (P + r"mask_downscaling\.4\.(weight|bias)", _rename(TP + r"mask_embed.layer_norm2.\1")),
    (P + r"mask_downscaling\.6\.(weight|bias)", _rename(TP + r"mask_embed.conv3.\1")),
    # mask decoder
    (D + r"(iou_token|mask_tokens|obj_score_token)\.weight", _rename(TD + r"\1.weight")),
    (D + r"transformer\.layers\.(\d+)\." + ATTENTION + r"\.(q_proj|k_proj|v_proj)\.(weight|bias)",
     _rename(TD + r"transformer.layers.\1.\2.\3.\4")),
    (D + r"transformer\.layers\.(\d+)\." + ATTENTION + r"\.out_proj\.(weight|bias)",
     _rename(TD + r"transformer.layers.\1.\2.o_proj.\3")),
    (D + r"transformer\.layers\.(\d+)\.norm([1-4])\.(weight|bias)",
     _rename(TD + r"transformer.layers.\1.layer_norm\2.\3")),
    (D + r"transformer\.layers\.(\d+)\.mlp\.layers\.0\.(weight|bias)",
     _rename(TD + r"transformer.layers.\1.mlp.proj_in.\2")),
    (D + r"transformer\.layers\.(\d+)\.mlp\.layers\.1\.(weight|bias)",
     _rename(TD + r"transformer.layers.\1.mlp.proj_out.\2")),
    (D + r"transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj)\.(weight|bias)",
     _rename(TD + r"transformer.final_attn_token_to_image.\1.\2")),
    (D + r"transformer\.final_attn_token_to_image\.out_proj\.(weight|bias)",
     _rename(TD + r"transformer.final_attn_token_to_image.o_proj.\1")),
    (D + r"transformer\.norm_final_attn\.(weight|bias)", _rename(TD + r"transformer.layer_norm_final_attn.\1")),
    (D + r"output_upscaling\.0\.(weight|bias)", _rename(TD + r"upscale_conv1.\1")),
    (D + r"output_upscaling\.1\.(weight|bias)", _rename(TD + r"upscale_layer_norm.\1")),
    (D + r"output_upscaling\.3\.(weight|bias)", _rename(TD + r"upscale_conv2.\1")),
    (D + r"conv_s([01])\.(weight|bias)", _rename(TD + r"conv_s\1.\2")),
    (D + THREE_LAYER_MLPS + r"\.layers\.0\.(weight|bias)", _rename(TD + r"\1.proj_in.\2")),
    (D + THREE_LAYER_MLPS + r"\.layers\.1\.(weight|bias)", _rename(TD + r"\1.layers.0.\2")),
    (D + THREE_LAYER_MLPS + r"\.layers\.2\.(weight|bias)", _rename(TD + r"\1.proj_out.\2")),
]  # fmt: skip


def rules(family: Family, config: Sa2VAConfig) -> list[Rule]:
    text = config.text_config
    if family.name == "internlm2":
        head_dim = text.hidden_size // text.num_attention_heads
        llm = _internlm2_rules(text.num_attention_heads, text.num_key_value_heads, head_dim)
    else:
        llm = QWEN2_RULES
    return [(re.compile(pattern), handler) for pattern, handler in VISION_RULES + llm + SAM2_RULES]


def map_keys(keys: list[str], family: Family, config: Sa2VAConfig) -> KeyMap:
    pieces: dict[str, list[Piece]] = {}
    ignored: dict[str, str] = {}
    unmatched: list[str] = []
    compiled = rules(family, config)
    for key in keys:
        for pattern, handler in compiled:
            match = pattern.fullmatch(key)
            if match:
                result = handler(match)
                if isinstance(result, str):
                    ignored[key] = result
                else:
                    pieces[key] = result
                break
        else:
            unmatched.append(key)
    return KeyMap(pieces, ignored, unmatched)

"""Official Sa2VA folders for the import tests, written from a description of the official checkpoints' layout.

The description follows the official modules shape by shape — Sa2VA's `Sa2VAChatModel` with InternViT
(`InternVisionModel`), a Qwen2 or InternLM2 causal LM, `mlp1`, `text_hidden_fcs`, and facebookresearch SAM2
(`SAM2Base`: Hiera trunk, FPN neck, prompt encoder, mask decoder, video memory) under
`grounding_encoder.sam2_model.` — and never consults the importer's key map. Its own tests check it against
published sizes, so that the import tests rest on a description that is right on real checkpoints too.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import Sam2Config
from transformers.convert_slow_tokenizer import import_protobuf

from vesselseg.model import prompts
from vesselseg.model.official.catalog import OFFICIAL_CONFIGS
from vesselseg.model.official.config import hiera_large
from vesselseg.model.presets import PRESETS

Shapes = dict[str, tuple[int, ...]]

# ---------------------------------------------------------------- InternViT, projector, LLMs, [SEG] head


def internvit_layout(vision: dict, tile: int) -> Shapes:
    c, inner = vision["hidden_size"], vision["intermediate_size"]
    p = vision["patch_size"]
    shapes: Shapes = {
        "vision_model.embeddings.class_embedding": (1, 1, c),
        "vision_model.embeddings.patch_embedding.weight": (c, 3, p, p),
        "vision_model.embeddings.patch_embedding.bias": (c,),
        "vision_model.embeddings.position_embedding": (1, (tile // p) ** 2 + 1, c),
    }
    for i in range(vision["num_hidden_layers"]):
        layer = f"vision_model.encoder.layers.{i}."
        shapes |= {layer + "ls1": (c,), layer + "ls2": (c,), layer + "attn.qkv.weight": (3 * c, c)}
        if vision["qkv_bias"]:
            shapes[layer + "attn.qkv.bias"] = (3 * c,)
        if vision["qk_normalization"]:
            shapes |= {layer + "attn.q_norm.weight": (c,), layer + "attn.k_norm.weight": (c,)}
        shapes |= {
            layer + "attn.proj.weight": (c, c), layer + "attn.proj.bias": (c,),
            layer + "mlp.fc1.weight": (inner, c), layer + "mlp.fc1.bias": (inner,),
            layer + "mlp.fc2.weight": (c, inner), layer + "mlp.fc2.bias": (c,),
        }  # fmt: skip
        for norm in ("norm1", "norm2"):
            shapes[layer + norm + ".weight"] = (c,)
            if vision["norm_type"] == "layer_norm":
                shapes[layer + norm + ".bias"] = (c,)
    return shapes


def projector_layout(vit: int, llm: int, ratio: float) -> Shapes:
    merged = vit * round(1 / ratio) ** 2
    return {
        "mlp1.0.weight": (merged,), "mlp1.0.bias": (merged,), "mlp1.1.weight": (llm, merged), "mlp1.1.bias": (llm,),
        "mlp1.3.weight": (llm, llm), "mlp1.3.bias": (llm,),
    }  # fmt: skip


def qwen2_layout(llm: dict) -> Shapes:
    d, inner, vocab = llm["hidden_size"], llm["intermediate_size"], llm["vocab_size"]
    hd = d // llm["num_attention_heads"]
    q, kv = llm["num_attention_heads"] * hd, llm["num_key_value_heads"] * hd
    shapes: Shapes = {"language_model.model.embed_tokens.weight": (vocab, d)}
    for i in range(llm["num_hidden_layers"]):
        layer = f"language_model.model.layers.{i}."
        shapes |= {
            layer + "self_attn.q_proj.weight": (q, d), layer + "self_attn.q_proj.bias": (q,),
            layer + "self_attn.k_proj.weight": (kv, d), layer + "self_attn.k_proj.bias": (kv,),
            layer + "self_attn.v_proj.weight": (kv, d), layer + "self_attn.v_proj.bias": (kv,),
            layer + "self_attn.o_proj.weight": (d, q),
            layer + "mlp.gate_proj.weight": (inner, d), layer + "mlp.up_proj.weight": (inner, d),
            layer + "mlp.down_proj.weight": (d, inner),
            layer + "input_layernorm.weight": (d,), layer + "post_attention_layernorm.weight": (d,),
        }  # fmt: skip
    return shapes | {"language_model.model.norm.weight": (d,), "language_model.lm_head.weight": (vocab, d)}


def internlm2_layout(llm: dict) -> Shapes:
    d, inner, vocab = llm["hidden_size"], llm["intermediate_size"], llm["vocab_size"]
    heads, kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
    hd = d // heads
    shapes: Shapes = {"language_model.model.tok_embeddings.weight": (vocab, d)}
    for i in range(llm["num_hidden_layers"]):
        layer = f"language_model.model.layers.{i}."
        shapes |= {
            layer + "attention.wqkv.weight": ((heads + 2 * kv_heads) * hd, d),
            layer + "attention.wo.weight": (d, heads * hd),
        }
        if llm["bias"]:
            shapes |= {layer + "attention.wqkv.bias": ((heads + 2 * kv_heads) * hd,), layer + "attention.wo.bias": (d,)}
        shapes |= {
            layer + "feed_forward.w1.weight": (inner, d), layer + "feed_forward.w3.weight": (inner, d),
            layer + "feed_forward.w2.weight": (d, inner),
            layer + "attention_norm.weight": (d,), layer + "ffn_norm.weight": (d,),
        }  # fmt: skip
    return shapes | {"language_model.model.norm.weight": (d,), "language_model.output.weight": (vocab, d)}


def text_fcs_layout(llm: int, prompt: int) -> Shapes:
    return {
        "text_hidden_fcs.0.weight": (llm, llm), "text_hidden_fcs.0.bias": (llm,),
        "text_hidden_fcs.2.weight": (prompt, llm), "text_hidden_fcs.2.bias": (prompt,),
    }  # fmt: skip


# ---------------------------------------------------------------- SAM2 (facebookresearch layout)

SAM2 = "grounding_encoder.sam2_model."


@dataclass(frozen=True)
class Sam2Shape:
    """The numbers of a SAM2 build; the original SAM2 modules' shapes follow from them."""

    embed: int  # Hiera stage-1 width; each stage doubles it
    blocks_per_stage: tuple[int, ...]
    window_background: tuple[int, int]  # pos_embed's grid
    first_window: int  # pos_embed_window's grid
    d: int  # neck / prompt / decoder width
    decoder_mlp: int
    iou_hidden: int
    memory_dim: int = 64
    memory_layers: int = 4
    memory_mlp: int = 2048

    @classmethod
    def of(cls, config: Sam2Config) -> "Sam2Shape":
        hiera = config.vision_config.backbone_config
        decoder = config.mask_decoder_config
        return cls(
            embed=hiera.embed_dim_per_stage[0],
            blocks_per_stage=tuple(hiera.blocks_per_stage),
            window_background=tuple(hiera.window_positional_embedding_background_size),
            first_window=hiera.window_size_per_stage[0],
            d=decoder.hidden_size,
            decoder_mlp=decoder.mlp_dim,
            iou_hidden=decoder.iou_head_hidden_dim,
        )


def _linear(name: str, out: int, inp: int) -> Shapes:
    return {name + ".weight": (out, inp), name + ".bias": (out,)}


def _mlp(name: str, dims: list[int]) -> Shapes:
    """SAM2's `MLP`: `layers.i` Linear(dims[i] → dims[i + 1])."""
    shapes: Shapes = {}
    for i in range(len(dims) - 1):
        shapes |= _linear(f"{name}.layers.{i}", dims[i + 1], dims[i])
    return shapes


def _attention(name: str, d: int, inner: int, kv_in: int | None = None) -> Shapes:
    kv_in = kv_in or d
    return (
        _linear(name + ".q_proj", inner, d) | _linear(name + ".k_proj", inner, kv_in)
        | _linear(name + ".v_proj", inner, kv_in) | _linear(name + ".out_proj", d, inner)
    )  # fmt: skip


def sam2_image_layout(s: Sam2Shape) -> Shapes:
    """Hiera trunk, FPN neck, prompt encoder, mask decoder and the no-memory embedding."""
    trunk = SAM2 + "image_encoder.trunk."
    shapes: Shapes = {
        trunk + "patch_embed.proj.weight": (s.embed, 3, 7, 7), trunk + "patch_embed.proj.bias": (s.embed,),
        trunk + "pos_embed": (1, s.embed, *s.window_background),
        trunk + "pos_embed_window": (1, s.embed, s.first_window, s.first_window),
    }  # fmt: skip
    dims = [s.embed * 2**stage for stage in range(len(s.blocks_per_stage))]
    block, dim = 0, dims[0]
    for stage, count in enumerate(s.blocks_per_stage):
        for _ in range(count):
            out = dims[stage]  # the first block of a stage widens dim → out and pools
            b = f"{trunk}blocks.{block}."
            shapes |= {b + "norm1.weight": (dim,), b + "norm1.bias": (dim,)}
            shapes |= _linear(b + "attn.qkv", 3 * out, dim) | _linear(b + "attn.proj", out, out)
            shapes |= {b + "norm2.weight": (out,), b + "norm2.bias": (out,)} | _mlp(b + "mlp", [out, 4 * out, out])
            if dim != out:
                shapes |= _linear(b + "proj", out, dim)
            block, dim = block + 1, out
    for i, channels in enumerate(reversed(dims)):
        shapes[f"{SAM2}image_encoder.neck.convs.{i}.conv.weight"] = (s.d, channels, 1, 1)
        shapes[f"{SAM2}image_encoder.neck.convs.{i}.conv.bias"] = (s.d,)

    prompt = SAM2 + "sam_prompt_encoder."
    shapes[prompt + "pe_layer.positional_encoding_gaussian_matrix"] = (2, s.d // 2)
    shapes |= {f"{prompt}point_embeddings.{i}.weight": (1, s.d) for i in range(4)}
    shapes[prompt + "not_a_point_embed.weight"] = (1, s.d)
    shapes[prompt + "no_mask_embed.weight"] = (1, s.d)
    # mask_downscaling: Conv(1→4, 2×2), LayerNorm2d, GELU, Conv(4→16, 2×2), LayerNorm2d, GELU, Conv(16→d, 1×1)
    for index, (out, inp, k) in {0: (4, 1, 2), 3: (16, 4, 2), 6: (s.d, 16, 1)}.items():
        shapes |= {
            f"{prompt}mask_downscaling.{index}.weight": (out, inp, k, k),
            f"{prompt}mask_downscaling.{index}.bias": (out,),
        }
    for index, channels in {1: 4, 4: 16}.items():
        shapes |= {
            f"{prompt}mask_downscaling.{index}.weight": (channels,),
            f"{prompt}mask_downscaling.{index}.bias": (channels,),
        }

    decoder = SAM2 + "sam_mask_decoder."
    for i in range(2):  # TwoWayTransformer, depth 2; cross attention at half width
        layer = f"{decoder}transformer.layers.{i}."
        shapes |= _attention(layer + "self_attn", s.d, s.d)
        shapes |= _attention(layer + "cross_attn_token_to_image", s.d, s.d // 2)
        shapes |= _attention(layer + "cross_attn_image_to_token", s.d, s.d // 2)
        shapes |= _mlp(layer + "mlp", [s.d, s.decoder_mlp, s.d])
        shapes |= {f"{layer}norm{n}.{p}": (s.d,) for n in range(1, 5) for p in ("weight", "bias")}
    shapes |= _attention(decoder + "transformer.final_attn_token_to_image", s.d, s.d // 2)
    shapes |= {
        decoder + "transformer.norm_final_attn.weight": (s.d,),
        decoder + "transformer.norm_final_attn.bias": (s.d,),
    }
    shapes |= {
        decoder + "iou_token.weight": (1, s.d),
        decoder + "mask_tokens.weight": (4, s.d),
        decoder + "obj_score_token.weight": (1, s.d),
    }
    shapes |= {  # ConvTranspose2d weights are (in, out, k, k)
        decoder + "output_upscaling.0.weight": (s.d, s.d // 4, 2, 2), decoder + "output_upscaling.0.bias": (s.d // 4,),
        decoder + "output_upscaling.1.weight": (s.d // 4,), decoder + "output_upscaling.1.bias": (s.d // 4,),
        decoder + "output_upscaling.3.weight": (s.d // 4, s.d // 8, 2, 2),
        decoder + "output_upscaling.3.bias": (s.d // 8,),
        decoder + "conv_s0.weight": (s.d // 8, s.d, 1, 1), decoder + "conv_s0.bias": (s.d // 8,),
        decoder + "conv_s1.weight": (s.d // 4, s.d, 1, 1), decoder + "conv_s1.bias": (s.d // 4,),
    }  # fmt: skip
    for i in range(4):
        shapes |= _mlp(f"{decoder}output_hypernetworks_mlps.{i}", [s.d, s.d, s.d, s.d // 8])
    shapes |= _mlp(decoder + "iou_prediction_head", [s.d, s.iou_hidden, s.iou_hidden, 4])
    shapes |= _mlp(decoder + "pred_obj_score_head", [s.d, s.d, s.d, 1])
    shapes[SAM2 + "no_mem_embed"] = (1, 1, s.d)
    return shapes


def sam2_video_layout(s: Sam2Shape) -> Shapes:
    """Memory attention and encoder, object pointers and their embeddings: what single images never use."""
    shapes: Shapes = {}
    for i in range(s.memory_layers):
        layer = f"{SAM2}memory_attention.layers.{i}."
        shapes |= _attention(layer + "self_attn", s.d, s.d)
        shapes |= _attention(layer + "cross_attn_image", s.d, s.d, kv_in=s.memory_dim)
        shapes |= _linear(layer + "linear1", s.memory_mlp, s.d) | _linear(layer + "linear2", s.d, s.memory_mlp)
        shapes |= {f"{layer}norm{n}.{p}": (s.d,) for n in range(1, 4) for p in ("weight", "bias")}
    shapes |= {SAM2 + "memory_attention.norm.weight": (s.d,), SAM2 + "memory_attention.norm.bias": (s.d,)}
    encoder = SAM2 + "memory_encoder."
    channels = 1
    for i in range(round(math.log2(16) / math.log2(2))):  # mask downsampler: stride 2 to a total stride of 16
        shapes |= {f"{encoder}mask_downsampler.encoder.{3 * i}.weight": (channels * 4, channels, 3, 3),
                   f"{encoder}mask_downsampler.encoder.{3 * i}.bias": (channels * 4,),
                   f"{encoder}mask_downsampler.encoder.{3 * i + 1}.weight": (channels * 4,),
                   f"{encoder}mask_downsampler.encoder.{3 * i + 1}.bias": (channels * 4,)}  # fmt: skip
        channels *= 4
    shapes |= {
        f"{encoder}mask_downsampler.encoder.12.weight": (s.d, channels, 1, 1),
        f"{encoder}mask_downsampler.encoder.12.bias": (s.d,),
    }
    shapes |= {encoder + "pix_feat_proj.weight": (s.d, s.d, 1, 1), encoder + "pix_feat_proj.bias": (s.d,)}
    for i in range(2):  # CXBlocks; Sa2VA's release renames `gamma` to `g_weight`
        block = f"{encoder}fuser.layers.{i}."
        shapes |= {block + "dwconv.weight": (s.d, 1, 7, 7), block + "dwconv.bias": (s.d,),
                   block + "norm.weight": (s.d,), block + "norm.bias": (s.d,), block + "g_weight": (s.d,)}  # fmt: skip
        shapes |= _linear(block + "pwconv1", 4 * s.d, s.d) | _linear(block + "pwconv2", s.d, 4 * s.d)
    shapes |= {encoder + "out_proj.weight": (s.memory_dim, s.d, 1, 1), encoder + "out_proj.bias": (s.memory_dim,)}
    shapes |= {
        SAM2 + "maskmem_tpos_enc": (7, 1, 1, s.memory_dim), SAM2 + "no_mem_pos_enc": (1, 1, s.d),
        SAM2 + "no_obj_ptr": (1, s.d), SAM2 + "mask_downsample.weight": (1, 1, 4, 4),
        SAM2 + "mask_downsample.bias": (1,),
    }  # fmt: skip
    return shapes | _mlp(SAM2 + "obj_ptr_proj", [s.d, s.d, s.d, s.d])


def numel(shapes: Shapes) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


# ---------------------------------------------------------------- tokenizers

QWEN2_SPECIALS = ("<|endoftext|>", prompts.IM_START, prompts.IM_END)
INTERNLM2_CHAT = (
    "<|plugin|>",
    "<|interpreter|>",
    "<|action_end|>",
    "<|action_start|>",
    prompts.IM_END,
    prompts.IM_START,
)
INTERNVL_TOKENS = (
    prompts.IMG_START,
    prompts.IMG_END,
    prompts.IMG_CONTEXT,
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)
SA2VA_TOKENS = (prompts.SEG, *prompts.REGION_TOKENS)

CORPUS = [
    f"{prompts.segmentation_prompt(e)} Sure, it is {prompts.SEG}. The image shows {e}."
    for e in ("the blood vessels", "the retinal vessels", "the optic disc", "all vessels", "the lesions", "a cat")
] + ["There is no such object in this image.", "Please describe the image in detail, with numbers 0 1 2 3 4 5 6 7 8 9."]


def qwen2_tokenizer() -> Tokenizer:
    """A byte-level BPE like Qwen2's, then its specials, InternVL's image tokens and Sa2VA's, in that order."""
    tokenizer = Tokenizer(BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.add_special_tokens([*QWEN2_SPECIALS, *INTERNVL_TOKENS, *SA2VA_TOKENS])
    return tokenizer


def internlm2_spm() -> tuple[bytes, dict[str, int]]:
    """A sentencepiece BPE model laid out like InternLM2's (control, byte and word pieces, the chat pieces last)
    and the ids of the tokens InternVL and Sa2VA add after it."""
    trained = Tokenizer(BPE())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trained.train_from_iterator(
        [line.replace("\n", " ") for line in CORPUS], trainers.BpeTrainer(vocab_size=300, show_progress=False)
    )
    pieces = sorted(trained.get_vocab().items(), key=lambda item: item[1])
    words = [p for p, _ in pieces if len(p) > 1] + [
        p for p, _ in pieces if len(p) == 1
    ]  # merges first, as spm orders by score
    model = import_protobuf().ModelProto()
    kinds = model.SentencePiece
    for piece, kind in [("<unk>", kinds.UNKNOWN), ("<s>", kinds.CONTROL), ("</s>", kinds.CONTROL)]:
        model.pieces.add(piece=piece, score=0.0, type=kind)
    for byte in range(256):
        model.pieces.add(piece=f"<0x{byte:02X}>", score=0.0, type=kinds.BYTE)
    for rank, piece in enumerate(words):
        model.pieces.add(piece=piece, score=-float(rank), type=kinds.NORMAL)
    for piece in INTERNLM2_CHAT:
        model.pieces.add(piece=piece, score=0.0, type=kinds.USER_DEFINED)
    model.trainer_spec.model_type = 2  # BPE
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_piece = "<unk>"
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = False
    size = len(model.pieces)
    added = {token: size + i for i, token in enumerate((*INTERNVL_TOKENS, *SA2VA_TOKENS))}
    chat = {token: size - len(INTERNLM2_CHAT) + i for i, token in enumerate(INTERNLM2_CHAT)}
    return model.SerializeToString(), chat | added


def _decoder_entry(content: str) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def write_qwen2_tokenizer(folder: Path, with_tokenizer_json: bool) -> int:
    tokenizer = qwen2_tokenizer()
    added = {t: tokenizer.token_to_id(t) for t in (*QWEN2_SPECIALS, *INTERNVL_TOKENS, *SA2VA_TOKENS)}
    if with_tokenizer_json:
        tokenizer.save(str(folder / "tokenizer.json"))
    else:  # what Qwen2's slow tokenizer saves
        tokenizer.model.save(str(folder))
        (folder / "added_tokens.json").write_text(json.dumps(added))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": prompts.IM_END,
        "pad_token": "<|endoftext|>", "unk_token": None, "model_max_length": 8192, "errors": "replace",
        "added_tokens_decoder": {str(i): _decoder_entry(t) for t, i in added.items()},
    }))  # fmt: skip
    return tokenizer.get_vocab_size()


def write_internlm2_tokenizer(folder: Path) -> int:
    model, added = internlm2_spm()
    (folder / "tokenizer.model").write_bytes(model)
    (folder / "added_tokens.json").write_text(json.dumps({t: i for t, i in added.items() if t not in INTERNLM2_CHAT}))
    decoder = {"0": _decoder_entry("<unk>"), "1": _decoder_entry("<s>"), "2": _decoder_entry("</s>")}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "InternLM2Tokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": decoder | {str(i): _decoder_entry(t) for t, i in added.items()},
    }))  # fmt: skip
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"})
    )
    return max(added.values()) + 1


# ---------------------------------------------------------------- tiny official folders

TINY_SAM2 = PRESETS["tiny"]()["sam2_config"]
TILE = 112


def tiny_official_config(family: str, vocab_size: int) -> dict:
    """config.json as Sa2VA writes it, at test sizes; the InternLM2 one has InternViT-6B's variant (RMSNorm,
    q/k norm, no qkv bias), as Sa2VA-26B does."""
    vision = {
        "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2, "num_channels": 3,
        "image_size": TILE, "patch_size": 14, "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6, "hidden_act": "gelu", "drop_path_rate": 0.0, "initializer_factor": 1.0,
        "use_flash_attn": True,
    }  # fmt: skip
    llm = {
        "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 4096,
        "rope_theta": 1000000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }  # fmt: skip
    if family == "qwen2":
        llm |= {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rms_norm_eps": 1e-6,
                "rope_scaling": {"type": "dynamic", "rope_type": "dynamic", "factor": 2.0},
                "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 2,
                "bos_token_id": None}  # fmt: skip
        template, dtype = "qwen_chat", "float32"
    else:
        vision |= {"qkv_bias": False, "qk_normalization": True, "norm_type": "rms_norm", "initializer_factor": 0.1}
        llm |= {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "rms_norm_eps": 1e-5,
                "rope_scaling": {"type": "dynamic", "factor": 2.0}, "bias": False, "bos_token_id": 1, "eos_token_id": 2,
                "pad_token_id": 2, "attn_implementation": "eager"}  # fmt: skip
        template, dtype = "internlm2_chat", "bfloat16"
    return {
        "architectures": ["Sa2VAChatModel"], "model_type": "sa2va_chat",
        "auto_map": {
            "AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig", "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel",
        },
        "vision_config": vision, "llm_config": llm, "template": template, "downsample_ratio": 0.5,
        "force_image_size": TILE, "select_layer": -1, "ps_version": "v2", "dynamic_image_size": True,
        "use_thumbnail": True, "min_dynamic_patch": 1, "max_dynamic_patch": 4, "use_backbone_lora": 0,
        "use_llm_lora": 0, "torch_dtype": dtype,
    }  # fmt: skip


def official_layout(config: dict, sam2: Sam2Shape) -> tuple[Shapes, Shapes]:
    """(the tensors an image model uses, SAM2's video tensors) of a Sa2VA checkpoint with this config.json."""
    vision, llm = config["vision_config"], config["llm_config"]
    lm = qwen2_layout(llm) if llm["architectures"] == ["Qwen2ForCausalLM"] else internlm2_layout(llm)
    image = (
        internvit_layout(vision, config["force_image_size"])
        | projector_layout(vision["hidden_size"], llm["hidden_size"], config["downsample_ratio"])
        | lm | text_fcs_layout(llm["hidden_size"], sam2.d) | sam2_image_layout(sam2)
    )  # fmt: skip
    return image, sam2_video_layout(sam2)


BOOBY_TRAP = "from pathlib import Path\nPath(__file__).with_suffix('.executed').touch()\nraise SystemExit('executed')\n"
REMOTE_CODE = ("configuration_sa2va_chat.py", "modeling_sa2va_chat.py", "sam2.py", "tokenization_internlm2.py")


@dataclass
class OfficialFolder:
    path: Path
    family: str
    config: dict
    tensors: dict[str, torch.Tensor]
    video_keys: set[str]


def random_tensors(shapes: Shapes, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: (torch.randn(shape, generator=generator) * 0.05).to(dtype) for key, shape in shapes.items()}


def write_weights(folder: Path, tensors: dict[str, torch.Tensor], fmt: str, shards: int = 2) -> None:
    """Shards as transformers writes them: `model-0000i-of-0000n.safetensors` or `pytorch_model-….bin` + index."""
    keys = sorted(tensors)
    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    weight_map = {}
    for i in range(shards):
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{suffix}"
        part = {k: tensors[k].contiguous() for k in keys[i::shards]}
        if fmt == "safetensors":
            save_file(part, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(part, folder / name)
        weight_map |= dict.fromkeys(part, name)
    (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_official_folder(
    folder: Path, family: str, fmt: str = "safetensors", with_tokenizer_json: bool = False, seed: int = 0
) -> OfficialFolder:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = (
        write_qwen2_tokenizer(folder, with_tokenizer_json) if family == "qwen2" else write_internlm2_tokenizer(folder)
    )
    config = tiny_official_config(family, vocab)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    for name in REMOTE_CODE:
        (folder / name).write_text(BOOBY_TRAP)
    image, video = official_layout(config, Sam2Shape.of(TINY_SAM2))
    tensors = random_tensors(image | video, getattr(torch, config["torch_dtype"]), seed)
    write_weights(folder, tensors, fmt)
    return OfficialFolder(folder, family, config, tensors, set(video))


def executed_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.executed"))


# ---------------------------------------------------------------- the description against public facts


def test_sam2_hiera_large_layout_has_the_published_size():
    """SAM2 Hiera-L is published with 224.4M parameters; the description (image part + video part) has them."""
    shape = Sam2Shape.of(hiera_large())
    total = numel(sam2_image_layout(shape)) + numel(sam2_video_layout(shape))
    assert total == pytest.approx(224.4e6, rel=2e-3)


def test_internvit_and_llm_layouts_have_the_published_sizes():
    """InternViT-300M ≈ 0.30B; Qwen2.5-0.5B 0.49B (tied head); InternLM2.5-7B 7.74B (untied)."""
    one_b, eight_b = OFFICIAL_CONFIGS["sa2va-1b"], OFFICIAL_CONFIGS["sa2va-8b"]
    assert numel(internvit_layout(one_b["vision_config"], 448)) == pytest.approx(0.304e9, rel=0.01)
    qwen = qwen2_layout(one_b["llm_config"] | {"vocab_size": 151936})
    tied = numel(qwen) - math.prod(qwen["language_model.lm_head.weight"])
    assert tied == pytest.approx(0.494e9, rel=0.01)
    assert numel(internlm2_layout(eight_b["llm_config"] | {"vocab_size": 92544})) == pytest.approx(7.74e9, rel=0.01)

"""Each re-layout the import does computes what the official module computed, on random inputs.

The official side is written here from the published equations (InternLM2's modeling_internlm2.py, InternViT's
modeling_intern_vit.py, SAM2's MLP), with the packed official weights; the native side is transformers' module
loaded with what the importer's key map makes of those weights.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import InternVLVisionConfig, LlamaConfig
from transformers.models.internvl.modeling_internvl import InternVLVisionLayer
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaRotaryEmbedding,
)
from transformers.models.sam2.modeling_sam2 import Sam2FeedForward

from vesselseg.model.official.families import FAMILIES
from vesselseg.model.official.keymap import map_keys, split_wqkv
from vesselseg.model.presets import preset_config
from vesselseg.model.tokenizer import build_tokenizer

TOKENIZER = build_tokenizer()


def native_state(official: dict[str, torch.Tensor], family: str, config, prefix: str) -> dict[str, torch.Tensor]:
    """The importer's key map applied to `official`; keys returned relative to the native `prefix`."""
    keymap = map_keys(list(official), FAMILIES[family], config)
    assert not keymap.unmatched
    state = {}
    for source, pieces in keymap.pieces.items():
        for piece in pieces:
            assert piece.target.startswith(prefix)
            state[piece.target.removeprefix(prefix)] = piece.take(official[source])
    return state


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def internlm2_layer(x: torch.Tensor, w: dict[str, torch.Tensor], heads: int, kv_heads: int, theta: float, eps: float):
    """InternLM2DecoderLayer: RMSNorm → packed-wqkv attention with RoPE and causal mask → residual → SwiGLU."""
    batch, length, hidden = x.shape
    head_dim, groups = hidden // heads, heads // kv_heads
    h = rms_norm(x, w["attention_norm.weight"], eps)
    qkv = F.linear(h, w["attention.wqkv.weight"], w.get("attention.wqkv.bias"))
    qkv = qkv.reshape(batch, length, kv_heads, groups + 2, head_dim)  # 'b q (h gs d) -> b q h gs d'
    q = qkv[..., :groups, :].reshape(batch, length, heads, head_dim).transpose(1, 2)
    k = qkv[..., -2, :].transpose(1, 2)
    v = qkv[..., -1, :].transpose(1, 2)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.outer(torch.arange(length).float(), inv_freq)
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(2, 3) / math.sqrt(head_dim)
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
    x = x + F.linear(attended, w["attention.wo.weight"], w.get("attention.wo.bias"))
    h = rms_norm(x, w["ffn_norm.weight"], eps)
    return x + F.linear(F.silu(F.linear(h, w["feed_forward.w1.weight"])) * F.linear(h, w["feed_forward.w3.weight"]),
                        w["feed_forward.w2.weight"])  # fmt: skip


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (8, 2), (6, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_internlm2_layer_equals_the_llama_layer_it_is_split_into(heads, kv_heads, bias):
    torch.manual_seed(heads * 10 + kv_heads + bias)
    hidden, inner, theta, eps = 48, 80, 1e6, 1e-5
    head_dim = hidden // heads
    text = LlamaConfig(
        hidden_size=hidden, intermediate_size=inner, num_attention_heads=heads, num_key_value_heads=kv_heads,
        num_hidden_layers=1, rms_norm_eps=eps, attention_bias=bias, mlp_bias=False, vocab_size=512,
        rope_parameters={"rope_type": "default", "rope_theta": theta}, attn_implementation="eager",
    )  # fmt: skip
    prefix = "language_model.model.layers.0."
    official = {
        "attention.wqkv.weight": torch.randn((heads + 2 * kv_heads) * head_dim, hidden) * 0.2,
        "attention.wo.weight": torch.randn(hidden, heads * head_dim) * 0.2,
        "feed_forward.w1.weight": torch.randn(inner, hidden) * 0.2,
        "feed_forward.w3.weight": torch.randn(inner, hidden) * 0.2,
        "feed_forward.w2.weight": torch.randn(hidden, inner) * 0.2,
        "attention_norm.weight": 1 + torch.randn(hidden) * 0.1,
        "ffn_norm.weight": 1 + torch.randn(hidden) * 0.1,
    }
    if bias:
        official |= {
            "attention.wqkv.bias": torch.randn((heads + 2 * kv_heads) * head_dim),
            "attention.wo.bias": torch.randn(hidden),
        }
    config = preset_config("sa2va-8b", TOKENIZER, text_config=text)
    layer = LlamaDecoderLayer(text, layer_idx=0).eval()
    layer.load_state_dict(native_state({prefix + k: v for k, v in official.items()}, "internlm2", config, prefix))

    x = torch.randn(2, 7, hidden)
    positions = torch.arange(7)[None].expand(2, -1)
    cos_sin = LlamaRotaryEmbedding(text)(x, positions)
    mask = torch.full((7, 7), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        ours = layer(x, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
    expected = internlm2_layer(x, official, heads, kv_heads, theta, eps)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_wqkv_rows_go_to_the_heads_grouped_query_attention_pairs_them_with():
    """Exact placement: row r of wqkv is tagged with r, so every native row says where it came from."""
    heads, kv_heads, head_dim = 6, 2, 3
    groups = heads // kv_heads
    packed = torch.arange((heads + 2 * kv_heads) * head_dim, dtype=torch.float64)[:, None].repeat(1, 5)
    q, k, v = (split_wqkv(packed, which, heads, kv_heads, head_dim) for which in "qkv")
    for head in range(heads):  # query head h belongs to key/value head h // groups
        block = (head // groups) * (groups + 2) + head % groups
        assert torch.equal(
            q[head * head_dim : (head + 1) * head_dim], packed[block * head_dim : (block + 1) * head_dim]
        )
    for kv in range(kv_heads):
        for native, slot in ((k, groups), (v, groups + 1)):
            block = kv * (groups + 2) + slot
            assert torch.equal(
                native[kv * head_dim : (kv + 1) * head_dim], packed[block * head_dim : (block + 1) * head_dim]
            )


def internvit_layer(x: torch.Tensor, w: dict[str, torch.Tensor], heads: int, norm: str, eps: float) -> torch.Tensor:
    """InternVisionEncoderLayer: x + attn(norm1(x))·ls1, then + mlp(norm2(x))·ls2; qkv packed as (3, heads, dim)."""
    batch, length, c = x.shape

    def normed(t, name):
        if norm == "rms_norm":
            return rms_norm(t, w[name + ".weight"], eps)
        return F.layer_norm(t, (c,), w[name + ".weight"], w[name + ".bias"], eps)

    qkv = F.linear(normed(x, "norm1"), w["attn.qkv.weight"], w.get("attn.qkv.bias"))
    q, k, v = qkv.reshape(batch, length, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    if "attn.q_norm.weight" in w:  # RMSNorm over all heads at once
        q = (
            rms_norm(q.transpose(1, 2).flatten(-2), w["attn.q_norm.weight"], eps)
            .view(batch, length, heads, -1)
            .transpose(1, 2)
        )
        k = (
            rms_norm(k.transpose(1, 2).flatten(-2), w["attn.k_norm.weight"], eps)
            .view(batch, length, heads, -1)
            .transpose(1, 2)
        )
    attention = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    attended = (attention @ v).transpose(1, 2).reshape(batch, length, c)
    x = x + F.linear(attended, w["attn.proj.weight"], w["attn.proj.bias"]) * w["ls1"]
    mlp = F.linear(
        F.gelu(F.linear(normed(x, "norm2"), w["mlp.fc1.weight"], w["mlp.fc1.bias"])),
        w["mlp.fc2.weight"],
        w["mlp.fc2.bias"],
    )
    return x + mlp * w["ls2"]


@pytest.mark.parametrize("variant", ["InternViT-300M (LayerNorm, qkv bias)", "InternViT-6B (RMSNorm, q/k norm)"])
def test_internvit_layer_equals_the_transformers_layer(variant):
    torch.manual_seed(0)
    six_b = "6B" in variant
    c, heads, inner, eps = 48, 4, 96, 1e-6
    vision = InternVLVisionConfig(
        hidden_size=c, num_attention_heads=heads, intermediate_size=inner, attention_bias=not six_b,
        use_qk_norm=six_b, norm_type="rms_norm" if six_b else "layer_norm", layer_norm_eps=eps,
    )  # fmt: skip
    official = {
        "attn.qkv.weight": torch.randn(3 * c, c) * 0.2, "attn.proj.weight": torch.randn(c, c) * 0.2,
        "attn.proj.bias": torch.randn(c) * 0.1, "mlp.fc1.weight": torch.randn(inner, c) * 0.2,
        "mlp.fc1.bias": torch.randn(inner) * 0.1, "mlp.fc2.weight": torch.randn(c, inner) * 0.2,
        "mlp.fc2.bias": torch.randn(c) * 0.1, "ls1": torch.randn(c), "ls2": torch.randn(c),
        "norm1.weight": 1 + torch.randn(c) * 0.1, "norm2.weight": 1 + torch.randn(c) * 0.1,
    }  # fmt: skip
    if six_b:
        official |= {"attn.q_norm.weight": 1 + torch.randn(c) * 0.1, "attn.k_norm.weight": 1 + torch.randn(c) * 0.1}
    else:
        official |= {
            "attn.qkv.bias": torch.randn(3 * c) * 0.1,
            "norm1.bias": torch.randn(c) * 0.1,
            "norm2.bias": torch.randn(c) * 0.1,
        }
    config = preset_config("sa2va-1b", TOKENIZER, vision_config=vision)
    prefix = "vision_model.encoder.layer.0."
    layer = InternVLVisionLayer(vision).eval()
    layer.load_state_dict(
        native_state({f"vision_model.encoder.layers.0.{k}": v for k, v in official.items()}, "qwen2", config, prefix)
    )

    x = torch.randn(2, 9, c)
    with torch.no_grad():
        ours = layer(x)
    torch.testing.assert_close(ours, internvit_layer(x, official, heads, vision.norm_type, eps), rtol=1e-5, atol=1e-5)


def test_sam2_three_layer_mlps_keep_their_order():
    """SAM2's MLP (`layers.0..2`, ReLU between) equals transformers' `proj_in → layers.0 → proj_out`."""
    torch.manual_seed(0)
    d = 32
    official = {
        "layers.0.weight": torch.randn(d, d) * 0.3, "layers.0.bias": torch.randn(d) * 0.1,
        "layers.1.weight": torch.randn(d, d) * 0.3, "layers.1.bias": torch.randn(d) * 0.1,
        "layers.2.weight": torch.randn(d // 8, d) * 0.3, "layers.2.bias": torch.randn(d // 8) * 0.1,
    }  # fmt: skip
    source = "grounding_encoder.sam2_model.sam_mask_decoder.output_hypernetworks_mlps.2."
    prefix = "grounding_encoder.mask_decoder.output_hypernetworks_mlps.2."
    mlp = Sam2FeedForward(d, d, d // 8, 3)
    mlp.load_state_dict(
        native_state({source + k: v for k, v in official.items()}, "qwen2", preset_config("tiny", TOKENIZER), prefix)
    )

    x = torch.randn(5, d)
    expected = F.relu(F.linear(x, official["layers.0.weight"], official["layers.0.bias"]))
    expected = F.relu(F.linear(expected, official["layers.1.weight"], official["layers.1.bias"]))
    expected = F.linear(expected, official["layers.2.weight"], official["layers.2.bias"])
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), expected)

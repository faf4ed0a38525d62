"""Importing tiny official-layout Sa2VA folders of both families: coverage, exact values, a working model."""

import json
import shutil

import numpy as np
import pytest
import torch
from test_official_layout import (
    TINY_SAM2,
    executed_files,
    write_official_folder,
    write_weights,
)

from vesselseg.model import Sa2VAModel, Sa2VAProcessor, prompts
from vesselseg.model.official import (
    REPORT,
    ImportReport,
    OfficialImportError,
    import_official,
    load_official,
)
from vesselseg.model.predict import predict

FAMILIES = ["qwen2", "internlm2"]


@pytest.fixture(scope="module", params=FAMILIES)
def imported(request, tmp_path_factory):
    """Qwen2: safetensors shards, tokenizer.json. InternLM2: .bin shards, a sentencepiece tokenizer.model."""
    root = tmp_path_factory.mktemp(request.param)
    fmt = "safetensors" if request.param == "qwen2" else "bin"
    official = write_official_folder(
        root / "official", request.param, fmt, with_tokenizer_json=request.param == "qwen2"
    )
    report = import_official(official.path, root / "native", sam2_config=TINY_SAM2)
    model = Sa2VAModel.from_pretrained(root / "native")
    return official, report, model, root / "native"


def test_every_source_tensor_is_imported_or_ignored_by_design(imported):
    official, report, model, native = imported
    mapped = {record.source for record in report.tensors}
    ignored = {record.source for record in report.ignored}
    assert mapped | ignored == set(official.tensors) and not mapped & ignored
    assert ignored == official.video_keys
    assert all("video memory" in record.reason for record in report.ignored)
    targets = [target.key for record in report.tensors for target in record.targets]
    assert set(targets) == set(model.state_dict()) and report.initialised == []
    assert report.native_tensors == len(model.state_dict())
    assert ImportReport.model_validate_json((native / REPORT).read_text()) == report
    for record in report.tensors:
        assert tuple(record.shape) == tuple(official.tensors[record.source].shape)
        assert record.dtype == str(official.tensors[record.source].dtype).removeprefix("torch.")


def expected_block(how: str, tensor: torch.Tensor, llm: dict) -> tuple[slice, torch.Tensor]:
    """(rows of the native tensor, what they must hold) for one source tensor, from the official layout."""
    kind, _, which = how.partition(":")
    if kind in ("rename", "copy"):
        return slice(None), tensor
    if kind == "concat":
        rows = tensor.shape[0]
        return slice(int(which) * rows, (int(which) + 1) * rows), tensor
    if kind == "qkv":  # InternViT: q rows, then k rows, then v rows
        third = tensor.shape[0] // 3
        return slice(None), tensor["qkv".index(which) * third : ("qkv".index(which) + 1) * third]
    assert kind == "wqkv"  # InternLM2: per key/value head, its query heads, then its key, then its value
    heads, kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
    head_dim, groups = llm["hidden_size"] // heads, heads // kv_heads
    blocks = []
    for kv in range(kv_heads):
        group = (
            [kv * (groups + 2) + g for g in range(groups)]
            if which == "q"
            else [kv * (groups + 2) + groups + "kv".index(which)]
        )
        blocks += [tensor[b * head_dim : (b + 1) * head_dim] for b in group]
    return slice(None), torch.cat(blocks)


def test_every_mapped_tensor_is_bit_identical(imported):
    official, report, model, _ = imported
    state = model.state_dict()
    for record in report.tensors:
        for target in record.targets:
            rows, expected = expected_block(target.how, official.tensors[record.source], official.config["llm_config"])
            assert torch.equal(state[target.key][rows], expected), f"{record.source} → {target.key} ({target.how})"


# Where transformers' conversion conventions put representative official tensors (official → native).
V, NV = "vision_model.encoder.layers.", "vision_model.encoder.layer."
S, NS = "grounding_encoder.sam2_model.", "grounding_encoder."
TRUNK, BACKBONE = S + "image_encoder.trunk.", NS + "vision_encoder.backbone."
DEC, NDEC = S + "sam_mask_decoder.", NS + "mask_decoder."
COMMON_PAIRS = {
    "vision_model.embeddings.class_embedding": "vision_model.embeddings.cls_token",
    "vision_model.embeddings.position_embedding": "vision_model.embeddings.position_embeddings",
    "vision_model.embeddings.patch_embedding.weight": "vision_model.embeddings.patch_embeddings.projection.weight",
    V + "1.attn.proj.weight": NV + "1.attention.projection_layer.weight",
    V + "1.norm1.weight": NV + "1.layernorm_before.weight",
    V + "1.norm2.weight": NV + "1.layernorm_after.weight",
    V + "0.ls1": NV + "0.lambda_1",
    V + "0.ls2": NV + "0.lambda_2",
    V + "0.mlp.fc2.weight": NV + "0.mlp.fc2.weight",
    "mlp1.3.weight": "mlp1.3.weight",
    "text_hidden_fcs.2.weight": "text_hidden_fcs.2.weight",
    S + "no_mem_embed": NS + "no_memory_embedding",
    TRUNK + "pos_embed_window": BACKBONE + "pos_embed_window",
    TRUNK + "patch_embed.proj.weight": BACKBONE + "patch_embed.projection.weight",
    TRUNK + "blocks.1.proj.weight": BACKBONE + "blocks.1.proj.weight",
    TRUNK + "blocks.2.norm2.bias": BACKBONE + "blocks.2.layer_norm2.bias",
    TRUNK + "blocks.3.mlp.layers.1.weight": BACKBONE + "blocks.3.mlp.proj_out.weight",
    S + "image_encoder.neck.convs.3.conv.weight": NS + "vision_encoder.neck.convs.3.weight",
    S + "sam_prompt_encoder.mask_downscaling.4.weight": NS + "prompt_encoder.mask_embed.layer_norm2.weight",
    S + "sam_prompt_encoder.no_mask_embed.weight": NS + "prompt_encoder.no_mask_embed.weight",
    DEC + "transformer.layers.1.cross_attn_image_to_token.out_proj.weight": NDEC
    + "transformer.layers.1.cross_attn_image_to_token.o_proj.weight",
    DEC + "transformer.layers.0.norm4.weight": NDEC + "transformer.layers.0.layer_norm4.weight",
    DEC + "transformer.layers.0.mlp.layers.0.weight": NDEC + "transformer.layers.0.mlp.proj_in.weight",
    DEC + "transformer.norm_final_attn.bias": NDEC + "transformer.layer_norm_final_attn.bias",
    DEC + "output_upscaling.3.weight": NDEC + "upscale_conv2.weight",
    DEC + "output_hypernetworks_mlps.3.layers.1.weight": NDEC + "output_hypernetworks_mlps.3.layers.0.weight",
    DEC + "iou_prediction_head.layers.2.weight": NDEC + "iou_prediction_head.proj_out.weight",
    DEC + "pred_obj_score_head.layers.0.bias": NDEC + "pred_obj_score_head.proj_in.bias",
    DEC + "conv_s1.weight": NDEC + "conv_s1.weight",
}
L = "language_model.model.layers."
LLM_PAIRS = {
    "qwen2": {
        "language_model.model.embed_tokens.weight": "language_model.model.embed_tokens.weight",
        L + "1.self_attn.k_proj.bias": L + "1.self_attn.k_proj.bias",
        "language_model.lm_head.weight": "language_model.lm_head.weight",
    },
    "internlm2": {
        "language_model.model.tok_embeddings.weight": "language_model.model.embed_tokens.weight",
        L + "1.attention.wo.weight": L + "1.self_attn.o_proj.weight",
        L + "1.feed_forward.w1.weight": L + "1.mlp.gate_proj.weight",
        L + "1.feed_forward.w3.weight": L + "1.mlp.up_proj.weight",
        L + "1.feed_forward.w2.weight": L + "1.mlp.down_proj.weight",
        L + "0.attention_norm.weight": L + "0.input_layernorm.weight",
        L + "0.ffn_norm.weight": L + "0.post_attention_layernorm.weight",
        "language_model.output.weight": "language_model.lm_head.weight",
        V + "1.attn.k_norm.weight": NV + "1.attention.k_norm.weight",
    },
}


def test_representative_tensors_land_where_transformers_conventions_put_them(imported):
    official, _, model, _ = imported
    state = model.state_dict()
    for source, target in (COMMON_PAIRS | LLM_PAIRS[official.family]).items():
        assert torch.equal(state[target], official.tensors[source]), f"{source} → {target}"
    sam2 = "grounding_encoder.sam2_model.sam_prompt_encoder."
    points = torch.cat([official.tensors[f"{sam2}point_embeddings.{i}.weight"] for i in range(4)])
    assert torch.equal(state["grounding_encoder.prompt_encoder.point_embed.weight"], points)
    gaussian = official.tensors[sam2 + "pe_layer.positional_encoding_gaussian_matrix"]
    assert torch.equal(state["grounding_encoder.shared_image_embedding.positional_embedding"], gaussian)
    assert torch.equal(state["grounding_encoder.prompt_encoder.shared_embedding.positional_embedding"], gaussian)


def test_config_carries_the_official_architecture(imported):
    official, report, model, _ = imported
    config, llm, vision = model.config, official.config["llm_config"], official.config["vision_config"]
    text = config.text_config
    assert report.family == official.family and report.release is None and report.template_matches
    assert text.model_type == ("qwen2" if official.family == "qwen2" else "llama")
    assert text.rope_parameters == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6}
    assert (text.rms_norm_eps, text.num_key_value_heads, text.vocab_size) == (
        llm["rms_norm_eps"],
        llm["num_key_value_heads"],
        llm["vocab_size"],
    )
    assert config.vision_config.use_qk_norm == vision["qk_normalization"]
    assert config.vision_config.norm_type == vision["norm_type"]
    assert config.vision_config.attention_bias == vision["qkv_bias"]
    assert (config.tile_size, config.max_tiles, config.use_thumbnail) == (112, 4, True)
    assert str(model.dtype) == f"torch.{official.config['torch_dtype']}" == f"torch.{report.dtype}"


def test_special_tokens_keep_their_ids_after_saving(imported):
    official, report, model, native = imported
    processor = Sa2VAProcessor.from_pretrained(native)
    declared = json.loads((official.path / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    declared = {entry["content"]: int(i) for i, entry in declared.items()}
    for token in (prompts.SEG, *prompts.REGION_TOKENS, prompts.IMG_CONTEXT, prompts.IMG_START, prompts.IMG_END):
        assert processor.tokenizer.convert_tokens_to_ids(token) == declared[token] == report.tokenizer.token_ids[token]
    assert (model.config.seg_token_id, model.config.image_token_id) == (
        declared[prompts.SEG],
        declared[prompts.IMG_CONTEXT],
    )
    assert processor.tokenizer.eos_token == prompts.IM_END
    text = "Please segment the retinal vessels in this image."
    assert processor.tokenizer.decode(processor.tokenizer(text, add_special_tokens=False).input_ids) == text


def test_imported_model_segments_and_trains(imported):
    official, _, model, native = imported
    processor = Sa2VAProcessor.from_pretrained(native)
    image = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    prompt = prompts.segmentation_prompt("the blood vessels")
    [result] = predict(model, processor, [image], [prompt], mode="forced")
    assert result.seg_count == 1 and result.probabilities[0].shape == (90, 130)
    assert np.isfinite(result.probabilities[0]).all()
    batch = processor([image], [prompt], answers=[prompts.FORCED_ANSWER], masks=[np.ones((90, 130), np.uint8)])
    loss = model(**batch.to("cpu", model.dtype)).loss
    loss.backward()
    assert torch.isfinite(loss) and model.text_hidden_fcs[0].weight.grad is not None
    assert executed_files(official.path) == []


@pytest.mark.parametrize(
    "tamper,offender",
    [
        ("missing", "vision_model.encoder.layer.1.attention.projection_layer.weight"),
        ("wrong shape", "grounding_encoder.sam2_model.sam_mask_decoder.conv_s0.weight"),
        ("extra", "language_model.model.layers.7.attention.wqkv.weight"),
        ("extra", "grounding_encoder.sam2_model.sam_mask_decoder.iou_prediction_head.layers.3.weight"),
    ],
)
def test_a_tampered_checkpoint_fails_naming_the_offenders(imported, tmp_path, tamper, offender):
    official, _, _, _ = imported
    if official.family == "qwen2" and "wqkv" in offender:
        offender = offender.replace("attention.wqkv", "self_attn.q_proj")
    tensors = dict(official.tensors)
    if tamper == "missing":
        del tensors["vision_model.encoder.layers.1.attn.proj.weight"]
    elif tamper == "wrong shape":
        tensors[offender] = tensors[offender][:-1]
    else:
        tensors[offender] = torch.zeros(3, 3, dtype=tensors["mlp1.0.weight"].dtype)
    folder = tmp_path / "tampered"
    shutil.copytree(official.path, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))
    write_weights(folder, tensors, "safetensors")
    with pytest.raises(OfficialImportError) as raised:
        import_official(folder, tmp_path / "native", sam2_config=TINY_SAM2)
    message = str(raised.value)
    assert offender in message
    phrases = {"missing": ["left unfilled"], "wrong shape": ["shape mismatch"], "extra": ["lacks", "no rule maps"]}
    assert any(phrase in message for phrase in phrases[tamper])
    assert not (tmp_path / "native").exists()


def test_allow_missing_covers_only_documented_optional_parts(imported, tmp_path):
    official, _, _, _ = imported
    tensors = {k: v for k, v in official.tensors.items() if not k.startswith("text_hidden_fcs.")}
    folder = tmp_path / "without_fcs"
    shutil.copytree(official.path, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))
    write_weights(folder, tensors, "safetensors")
    with pytest.raises(OfficialImportError, match="text_hidden_fcs.0.weight"):
        import_official(folder, tmp_path / "strict", sam2_config=TINY_SAM2)
    with pytest.raises(OfficialImportError, match="not optional parts"):
        import_official(folder, tmp_path / "wrong", allow_missing=["mlp1"], sam2_config=TINY_SAM2)
    report = import_official(folder, tmp_path / "native", allow_missing=["text_hidden_fcs"], sam2_config=TINY_SAM2)
    assert sorted(r.key for r in report.initialised) == [
        f"text_hidden_fcs.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")
    ]
    model, loading = Sa2VAModel.from_pretrained(tmp_path / "native", output_loading_info=True)
    assert not loading["missing_keys"] and model.text_hidden_fcs[0].weight.abs().sum() > 0


def test_refusals_before_any_tensor_is_read(imported, tmp_path):
    official, _, _, _ = imported
    with pytest.raises(OfficialImportError, match="is not sa2va-1b: .*llm_config.hidden_size: 64"):
        import_official(official.path, tmp_path / "a", preset="sa2va-1b", sam2_config=TINY_SAM2)
    with pytest.raises(OfficialImportError, match="preset 'sa2va-3b'"):
        import_official(official.path, tmp_path / "b", preset="sa2va-3b", sam2_config=TINY_SAM2)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("a user's file")
    with pytest.raises(OfficialImportError, match="not empty"):
        import_official(official.path, tmp_path / "c", sam2_config=TINY_SAM2)
    with pytest.raises(OfficialImportError, match="SAM2|shape mismatch"):
        import_official(official.path, tmp_path / "d")  # the default SAM2 is Hiera-L; this checkpoint's is tiny


def test_load_official_imports_once_then_reuses(imported, tmp_path):
    official, _, reference, _ = imported
    model, processor = load_official(f"official:{official.path}", cache=tmp_path, sam2_config=TINY_SAM2)
    [native] = list(tmp_path.glob("*/native"))
    stamp = (native / REPORT).stat().st_mtime_ns
    again, _ = load_official(official.path, cache=tmp_path, sam2_config=TINY_SAM2)
    assert (native / REPORT).stat().st_mtime_ns == stamp
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value) and torch.equal(again.state_dict()[key], value)
    assert processor.tokenizer.convert_tokens_to_ids(prompts.SEG) == reference.config.seg_token_id

"""xtuner iter_N.pth → Hugging Face folder: official names mapped, partial state dict overlaid, reported, verified."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vesselseg.convert import (
    ConversionError,
    OutputConfig,
    ParityConfig,
    XtunerInput,
    convert_checkpoint,
    verify_parity,
)
from vesselseg.convert.official_keys import official_to_native
from vesselseg.convert.parity import probe_batch, probe_outputs
from vesselseg.data import DataPrepConfig, PreparedDataset, prepare_dataset
from vesselseg.model import (
    Sa2VAModel,
    Sa2VAProcessor,
    apply_training_recipe,
    build_preset,
)

SA2VA_RECIPE = {
    "freeze_vision_model": True,
    "freeze_llm": True,
    "freeze_sam2_encoder": True,
    "use_llm_lora": True,
    "lora_r": 4,
    "lora_alpha": 8,
}


def official_sam2_decoder_keys(depth: int = 2, mask_tokens: int = 4) -> list[str]:
    """The state-dict names of SAM2's own MaskDecoder (facebookresearch/sam2: TwoWayTransformer, MLP heads of three
    layers, high-resolution convs, object-score head), written out from that module layout."""
    keys = []
    attention = [f"{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")]
    affine = ["weight", "bias"]
    for i in range(depth):
        block = f"transformer.layers.{i}."
        keys += [block + "self_attn." + a for a in attention]
        keys += [block + "cross_attn_token_to_image." + a for a in attention]
        keys += [block + "cross_attn_image_to_token." + a for a in attention]
        keys += [block + f"mlp.layers.{j}.{w}" for j in (0, 1) for w in affine]
        keys += [block + f"norm{j}.{w}" for j in (1, 2, 3, 4) for w in affine]
    keys += ["transformer.final_attn_token_to_image." + a for a in attention]
    keys += [f"transformer.norm_final_attn.{w}" for w in affine]
    keys += ["iou_token.weight", "mask_tokens.weight", "obj_score_token.weight"]
    keys += [f"output_upscaling.{j}.{w}" for j in (0, 1, 3) for w in affine]
    keys += [f"conv_s{j}.{w}" for j in (0, 1) for w in affine]
    keys += [
        f"output_hypernetworks_mlps.{m}.layers.{j}.{w}" for m in range(mask_tokens) for j in (0, 1, 2) for w in affine
    ]
    keys += [
        f"{head}.layers.{j}.{w}"
        for head in ("iou_prediction_head", "pred_obj_score_head")
        for j in (0, 1, 2)
        for w in affine
    ]
    return ["grounding_encoder.sam2_model.sam_mask_decoder." + k for k in keys]


def test_official_mask_decoder_names_map_one_to_one_onto_ours():
    model, _ = build_preset("tiny")
    ours = {k for k in model.state_dict() if k.startswith("grounding_encoder.mask_decoder.")}
    official = official_sam2_decoder_keys()
    mapped, unexpected = official_to_native(official, model.config)
    assert unexpected == [] and len(mapped) == len(official) == len(ours)
    assert {native.key for natives in mapped.values() for native in natives} == ours


def test_official_wrappers_and_adapter_names():
    config = build_preset("tiny")[0].config
    lora = "language_model.base_model.model.model.layers.1.mlp.down_proj.lora_B"
    keys = [
        f"mllm.model.{lora}.weight",
        "mllm.model.language_model.base_model.model.lm_head.modules_to_save.default.weight",
        "mllm.model.mlp1.3.bias",
        "text_hidden_fcs.2.weight",
        "mllm.model.vision_model.encoder.layers.0.ls1",
        "mllm.model.language_model.base_model.model.lm_head.original_module.weight",
        "mllm.model.something_else",
    ]
    mapped, unexpected = official_to_native(keys, config)
    assert [(n.key, n.lora) for n in mapped[keys[0]]] == [
        ("language_model.model.layers.1.mlp.down_proj.weight", "lora_B")
    ]
    assert [n.key for n in mapped[keys[1]]] == ["language_model.lm_head.weight"]
    assert [n.key for n in mapped[keys[2]]] == ["mlp1.3.bias"] and [n.key for n in mapped[keys[3]]] == [keys[3]]
    # The vision tower is a real part with a rule, though never trained by Sa2VA; peft's frozen originals and
    # unknown names are reported.
    assert "mllm.model.vision_model.encoder.layers.0.ls1" in mapped
    assert unexpected == sorted(keys[5:])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PreparedDataset:
    root = tmp_path_factory.mktemp("data") / "dataset"
    prepare_dataset(DataPrepConfig.model_validate({"synthetic": {"count": 6, "size": 128, "seed": 3}}), root)
    return PreparedDataset(root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Sa2VAModel, dict[str, torch.Tensor]]:
    """A saved base model, the training-time module after "training" (every trained tensor moved), and the
    official-style state dict of what it trained, as Sa2VA's xtuner saves it."""
    root = tmp_path_factory.mktemp("xtuner")
    torch.manual_seed(0)
    base, processor = build_preset("tiny", **SA2VA_RECIPE)
    base.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    module = apply_training_recipe(Sa2VAModel.from_pretrained(root / "base", dtype=torch.float32)).eval()
    generator = torch.Generator().manual_seed(1)
    official = {}
    decoder, _ = official_to_native(official_sam2_decoder_keys(), module.config)
    official_of = {natives[0].key: name for name, natives in decoder.items()}
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
            if name in official_of:
                official[official_of[name]] = parameter.detach().clone()
            elif ".modules_to_save.default." in name:
                # Sa2VA trains embed_tokens / lm_head in place: their official names carry no peft copy.
                official["mllm.model." + name.replace(".modules_to_save.default.", ".")] = parameter.detach().clone()
            elif name.startswith(("mlp1.", "language_model.")):
                official["mllm.model." + name.replace(".default.", ".")] = parameter.detach().clone()
            else:
                official[name] = parameter.detach().clone()
    return root, module, official


def test_iter_checkpoint_round_trips_and_reports(trained, dataset, tmp_path):
    root, module, official = trained
    iter_file = tmp_path / "iter_100.pth"
    torch.save({"state_dict": {**official, "mllm.model.vision_model.extra.weight": torch.zeros(2)}}, iter_file)
    checkpoint = XtunerInput(iter_file, root / "base")
    saved = convert_checkpoint(checkpoint, tmp_path / "out", OutputConfig(dtype="float32"))
    report = checkpoint.report
    assert report is not None and len(report.applied) == len(official)
    assert report.missing == [] and report.unexpected == ["mllm.model.vision_model.extra.weight"]
    applied = sorted(t for targets in report.applied.values() for t in targets)
    assert applied == sorted(n for n, p in module.named_parameters() if p.requires_grad)

    parity = verify_parity(checkpoint, saved.path, dataset, ParityConfig(), "float32")
    assert parity.passed and all(o.max_rel_error < 1e-5 for o in parity.outputs.values())
    # Against the module that "trained" itself, not only against a second reading of the same files.
    batch, _ = probe_batch(dataset, Sa2VAProcessor.from_pretrained(saved.path), ParityConfig())
    converted = probe_outputs(Sa2VAModel.from_pretrained(saved.path, dtype=torch.float32), batch, "cpu")
    expected = probe_outputs(module, batch, "cpu")
    for name in expected:
        assert torch.allclose(converted[name], expected[name], rtol=1e-4, atol=1e-5), name
    base = probe_outputs(Sa2VAModel.from_pretrained(root / "base", dtype=torch.float32), batch, "cpu")
    assert not torch.allclose(base["lm_logits"], expected["lm_logits"], atol=1e-3), "training must have changed outputs"


def test_missing_trained_tensors_fail_unless_allowed(trained, dataset, tmp_path):
    root, _, official = trained
    dropped = sorted(k for k in official if "text_hidden_fcs" in k)
    iter_file = tmp_path / "iter_5.pth"
    torch.save({"state_dict": {k: v for k, v in official.items() if k not in dropped}}, iter_file)
    with pytest.raises(ConversionError, match=r"iter_5\.pth lacks 4 of the"):
        convert_checkpoint(XtunerInput(iter_file, root / "base"), tmp_path / "refused", OutputConfig())
    assert not (tmp_path / "refused" / "model.safetensors").exists()

    allowed = XtunerInput(iter_file, root / "base", allow_missing=True)
    saved = convert_checkpoint(allowed, tmp_path / "out", OutputConfig())
    assert allowed.report is not None and allowed.report.missing == dropped
    assert verify_parity(allowed, saved.path, dataset, ParityConfig(), "bfloat16").passed


def test_iter_file_without_state_dict_is_refused(trained, tmp_path):
    root, _, official = trained
    iter_file = tmp_path / "iter_9.pth"
    torch.save(official, iter_file)  # the bare dict, not {'state_dict': ...}
    with pytest.raises(ConversionError, match=r"iter_9\.pth has no 'state_dict' entry"):
        convert_checkpoint(XtunerInput(iter_file, root / "base"), tmp_path / "out", OutputConfig())
    assert not (tmp_path / "out").exists()


def test_iter_tensor_of_another_shape_names_the_key(trained, tmp_path):
    root, _, official = trained
    key = next(k for k in official if "lora_A" in k)
    iter_file = tmp_path / "iter_1.pth"
    torch.save({"state_dict": {**official, key: torch.zeros(8, 64)}}, iter_file)
    with pytest.raises(ConversionError, match=re.escape(f"iter_1.pth: {key} gives ") + r".* the shape \[8, 64\]"):
        convert_checkpoint(XtunerInput(iter_file, root / "base"), tmp_path / "out", OutputConfig())


def test_lora_on_internlm2_packed_wqkv_splits_like_the_weight(tmp_path):
    """InternLM2 (Sa2VA-8B/26B) packs q, k, v into `wqkv`; its LoRA B splits by the same rows, A is shared."""
    from transformers import LlamaConfig

    from vesselseg.convert.merge import plan_merge
    from vesselseg.convert.xtuner import XtunerOverlay
    from vesselseg.model.official.keymap import split_wqkv

    llama = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    base, processor = build_preset("tiny", **SA2VA_RECIPE, text_config=llama)
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    plan = plan_merge(base.config)
    packed = "mllm.model.language_model.base_model.model.model.layers.0.attention.wqkv"
    lora_a, lora_b = torch.randn(4, 64), torch.randn((4 + 2 * 2) * 16, 4)
    torch.save(
        {"state_dict": {f"{packed}.lora_A.weight": lora_a, f"{packed}.lora_B.weight": lora_b}}, tmp_path / "i.pth"
    )
    overlay = XtunerOverlay(plan, tmp_path / "i.pth", tmp_path / "base", allow_missing=True)

    assert overlay.report.unexpected == [] and len(overlay.report.applied[f"{packed}.lora_B.weight"]) == 3
    layer = "language_model.base_model.model.model.layers.0.self_attn"
    for part in "qkv":
        a = overlay.load(f"{layer}.{part}_proj.lora_A.default.weight")
        b = overlay.load(f"{layer}.{part}_proj.lora_B.default.weight")
        expected = split_wqkv(lora_b @ lora_a, part, heads=4, kv_heads=2, head_dim=16)
        assert torch.allclose(b @ a, expected, atol=1e-6), part

"""Every preset builds (large ones on the meta device) with the official parts' shapes and sizes."""

import pytest
import torch
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

from vesselseg.model import Sa2VAModel
from vesselseg.model.presets import PRESETS, PUBLISHED, build_preset, parameter_counts, preset_config
from vesselseg.model.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_official_presets_match_the_published_sizes(tokenizer, name):
    with torch.device("meta"):
        model = Sa2VAModel(preset_config(name, tokenizer))
    counts = parameter_counts(model)
    published = PUBLISHED[name]
    base_vlm = counts["vision_model"] + counts["mlp1"] + counts["llm"]
    assert base_vlm == pytest.approx(published.total_base_vlm, rel=0.01)
    assert counts["vision_model"] == pytest.approx(published.vision_params, rel=0.02)
    # SAM2-L's published size includes video memory modules that an image model does not build.
    sam2 = counts["sam2_image_encoder"] + counts["sam2_prompt_encoder"] + counts["sam2_mask_decoder"]
    assert 0.95 * published.sam2_params < sam2 < published.sam2_params

    llm_class = Qwen2ForCausalLM if name in ("sa2va-1b", "sa2va-4b") else LlamaForCausalLM
    assert isinstance(model.language_model, llm_class)
    assert model.grounding_encoder.config.vision_config.backbone_config.blocks_per_stage == [2, 6, 36, 4]
    assert {k.split(".")[0] for k in model.state_dict()} == {
        "vision_model",
        "mlp1",
        "language_model",
        "grounding_encoder",
        "text_hidden_fcs",
    }
    assert model.text_hidden_fcs[-1].out_features == 256


def test_tiny_is_small_enough_for_the_cpu():
    model, processor = build_preset("tiny")
    total = parameter_counts(model)["total"]
    assert 1e6 < total < 5e6
    assert len(processor.tokenizer) <= model.config.text_config.vocab_size


def test_unknown_preset_and_overrides(tokenizer):
    with pytest.raises(ValueError, match="unknown preset 'sa2va-2b'"):
        preset_config("sa2va-2b", tokenizer)
    assert preset_config("tiny", tokenizer, mask_loss="official_lowres").mask_loss == "official_lowres"
    assert set(PRESETS) == {"tiny", "tiny-refined", "sa2va-1b", "sa2va-4b", "sa2va-8b", "sa2va-26b"}

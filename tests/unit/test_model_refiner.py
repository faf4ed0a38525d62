"""The optional thin-vessel mask refiner: off in the official presets, a no-op untrained, trained by the recipe."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vesselseg.model import PRESETS, Sa2VAModel, apply_training_recipe, build_preset, preset_config, prompts
from vesselseg.model.tokenizer import build_tokenizer


def _batch(processor, size=(200, 180)):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    mask = (rng.random(size) < 0.1).astype(np.uint8)
    return processor(
        [image], [prompts.segmentation_prompt("blood vessels")], answers=[prompts.FORCED_ANSWER], masks=[mask]
    )


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_only_tiny_refined_has_the_refiner(name):
    with torch.device("meta"):
        model = Sa2VAModel(preset_config(name, build_tokenizer()))
    has_refiner = any(key.startswith("mask_refiner.") for key in model.state_dict())
    assert has_refiner == (model.mask_refiner is not None) == (model.config.mask_refiner_channels > 0)
    assert has_refiner == (name == "tiny-refined")


def test_tiny_refined_draws_masks_at_512_px_with_the_encoder_cost_of_tiny():
    refined, processor = build_preset("tiny-refined")
    plain, _ = build_preset("tiny")
    with torch.no_grad():
        logits = refined(**_batch(processor)).mask_logits
    assert logits.shape == (1, 512, 512)
    # An 8-px patch stride at 512 px gives the Hiera stages the token grids tiny has at 256 px.
    grids = [
        refined.config.sam2_config.vision_config.backbone_feature_sizes,
        plain.config.sam2_config.vision_config.backbone_feature_sizes,
    ]
    assert grids[0] == grids[1]


def test_untrained_refiner_is_exactly_bilinear_upsampling_to_the_sam2_input():
    torch.manual_seed(0)
    plain, processor = build_preset("tiny")
    refined, _ = build_preset("tiny", mask_refiner_channels=8)
    loaded = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not loaded.unexpected_keys and all(k.startswith("mask_refiner.") for k in loaded.missing_keys)
    batch = _batch(processor)
    with torch.no_grad():
        low = plain(**batch).mask_logits
        high = refined(**batch).mask_logits
    size = plain.config.sam2_image_size
    assert low.shape == (1, size // 4, size // 4) and high.shape == (1, size, size)
    upsampled = F.interpolate(low[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(high, upsampled)


def test_recipe_trains_the_refiner_and_gradients_reach_it(tmp_path):
    torch.manual_seed(0)
    model, processor = build_preset("tiny", mask_refiner_channels=8, freeze_sam2_encoder=True)
    apply_training_recipe(model)
    assert all(p.requires_grad for p in model.mask_refiner.parameters())
    model(**_batch(processor)).loss.backward()
    assert model.mask_refiner.output.weight.grad.abs().sum() > 0
    # The zero-initialised output conv passes no gradient on at the first step; the decoder still learns through
    # the residual upsampling path.
    assert model.grounding_encoder.mask_decoder.output_hypernetworks_mlps[0].layers[0].weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    again = Sa2VAModel.from_pretrained(tmp_path)
    assert again.config.mask_refiner_channels == 8
    assert torch.equal(again.mask_refiner.output.weight, model.mask_refiner.output.weight)


def test_a_refiner_added_to_a_saved_model_starts_as_plain_upsampling(tmp_path):
    """from_pretrained initialises the weights a folder lacks through `_init_weights`; the refiner's must be its own
    (zero output, Kaiming body), not the transformer's N(0, 0.02), or an untrained head would change the masks."""
    plain, _ = build_preset("tiny")
    plain.save_pretrained(tmp_path)
    config = plain.config
    config.mask_refiner_channels = 8
    refined = Sa2VAModel.from_pretrained(tmp_path, config=config)
    assert torch.count_nonzero(refined.mask_refiner.output.weight) == 0
    first = refined.mask_refiner.body[0].weight
    assert first.std() > 0.05  # Kaiming-uniform for 4 × 3 × 3 inputs: about 0.096


def test_the_refiner_convolves_channels_last_with_the_values_of_the_contiguous_form():
    """Channels-last halved the refiner's CPU time (benchmarks/results/demo_profile.md); the layout must not change
    what it computes."""
    torch.manual_seed(0)
    refiner = build_preset("tiny", mask_refiner_channels=8)[0].mask_refiner
    torch.nn.init.normal_(refiner.output.weight, std=0.1)  # a trained head: its correction is not zero
    layouts = []
    refiner.body[0].register_forward_pre_hook(
        lambda _, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    logits, images = torch.randn(2, 16, 16), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        refined = refiner(logits, images)
        upsampled = F.interpolate(logits[:, None], size=(64, 64), mode="bilinear", align_corners=False)
        contiguous = upsampled + refiner.output(refiner.body(torch.cat([images, upsampled], dim=1)))
    assert layouts == [True, False]  # the refiner's call, then the contiguous reference
    torch.testing.assert_close(refined, contiguous[:, 0], rtol=1e-5, atol=1e-5)

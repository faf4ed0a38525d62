"""Sa2VAModel on the tiny preset: gradient flow per training recipe, batch shapes, loss modes, dtypes."""

import numpy as np
import pytest
import torch
from transformers.models.internvl.modeling_internvl import InternVLModel

from vesselseg.model import Sa2VAModel, Sa2VAProcessor, prompts
from vesselseg.model.finetuning import apply_training_recipe, merge_lora
from vesselseg.model.fused_gelu import GeluLinear
from vesselseg.model.modeling import pixel_shuffle
from vesselseg.model.presets import preset_config
from vesselseg.model.tokenizer import build_tokenizer

SA2VA_RECIPE = dict(
    freeze_vision_model=True, freeze_llm=True, freeze_sam2_encoder=True, use_llm_lora=True, lora_r=4, lora_alpha=8
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def tiny(tokenizer, **overrides) -> tuple[Sa2VAModel, Sa2VAProcessor]:
    torch.manual_seed(0)
    config = preset_config("tiny", tokenizer, **overrides)
    return Sa2VAModel(config), Sa2VAProcessor(config, tokenizer)


def examples(sizes: list[tuple[int, int]], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    masks = [(rng.random((h, w)) < 0.1).astype(np.uint8) for h, w in sizes]
    return images, masks


def training_batch(processor: Sa2VAProcessor, sizes: list[tuple[int, int]]):
    images, masks = examples(sizes)
    n = len(images)
    return processor(
        images, [prompts.segmentation_prompt("the blood vessels")] * n, answers=[prompts.FORCED_ANSWER] * n, masks=masks
    )


def test_pixel_shuffle_matches_internvl():
    features = torch.randn(2, 16, 16, 6)
    assert torch.equal(pixel_shuffle(features, 0.5), InternVLModel.pixel_shuffle(None, features, 0.5))


@pytest.mark.parametrize(
    "overrides",
    [{}, SA2VA_RECIPE, {**SA2VA_RECIPE, "sam2_multimask_output": True}],
    ids=["tiny-from-scratch", "sa2va-recipe-lora", "sa2va-recipe-multimask"],
)
def test_trainable_parameters_get_gradients_and_frozen_ones_none(tokenizer, overrides):
    model, processor = tiny(tokenizer, **overrides)
    apply_training_recipe(model)
    model.gradient_checkpointing_enable()
    model.train()
    model(**training_batch(processor, [(96, 128), (128, 96)])).loss.backward()

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    hypernetworks = "mask_decoder.output_hypernetworks_mlps"
    multimask = model.config.sam2_multimask_output
    # Only the chosen multimask candidates can receive gradients; the others are exempt in that mode.
    expected = {n for n in trainable if not (multimask and hypernetworks in n)}
    assert not [n for n in expected if trainable[n].grad is None]
    assert not [n for n, p in frozen.items() if p.grad is not None]
    assert all(trainable[n].grad.abs().sum() > 0 for n in expected if "text_hidden_fcs" in n)


def test_tiny_trains_everything_that_reaches_the_loss(tokenizer):
    model, _ = tiny(tokenizer)
    apply_training_recipe(model)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    unused = ("prompt_encoder.", "iou_prediction_head.", "pred_obj_score_head.", "output_hypernetworks_mlps.")
    assert frozen and all(any(part in n for part in unused) for n in frozen)
    assert not any("output_hypernetworks_mlps.0." in n for n in frozen)


def test_sa2va_recipe_freezes_what_the_official_recipe_freezes(tokenizer):
    model, _ = tiny(tokenizer, **SA2VA_RECIPE)
    apply_training_recipe(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    prefixes = {n.split(".")[0] for n in trainable}
    assert prefixes == {"mlp1", "language_model", "grounding_encoder", "text_hidden_fcs"}
    assert all("mask_decoder" in n for n in trainable if n.startswith("grounding_encoder"))
    llm = [n for n in trainable if n.startswith("language_model")]
    assert all("lora_" in n or "modules_to_save" in n for n in llm)
    assert any("embed_tokens.modules_to_save" in n for n in llm) and any("lm_head.modules_to_save" in n for n in llm)

    merge_lora(model)
    assert set(model.state_dict()) == set(tiny(tokenizer)[0].state_dict())


def test_lora_on_a_trainable_llm_is_refused(tokenizer):
    model, _ = tiny(tokenizer, use_llm_lora=True, freeze_llm=False)
    with pytest.raises(ValueError, match="freeze_llm"):
        apply_training_recipe(model)


@pytest.mark.parametrize("sizes", [[(160, 200)], [(160, 200), (256, 256), (97, 131)]], ids=["one", "three"])
@pytest.mark.parametrize("mask_loss", ["official_lowres", "full_res"])
def test_batches_of_one_and_many_images_of_different_sizes(tokenizer, sizes, mask_loss):
    model, processor = tiny(tokenizer, mask_loss=mask_loss, cldice_loss_weight=0.5 if mask_loss == "full_res" else 0)
    batch = training_batch(processor, sizes)
    out = model(**batch)
    side = 4 * model.config.sam2_image_size // model.config.sam2_config.prompt_encoder_config.patch_size
    assert out.mask_logits.shape == (len(sizes), side, side)
    assert out.seg_counts.tolist() == [1] * len(sizes)
    # The answer "It is [SEG]." plus end-of-turn is supervised, nothing else.
    assert out.lm_logits.shape[0] == len(sizes) * len(processor.answer_ids(prompts.FORCED_ANSWER))
    expected = out.lm_loss + 2.0 * out.mask_bce_loss + 0.5 * out.mask_dice_loss
    if mask_loss == "full_res":
        assert out.mask_cldice_loss is not None
        expected = expected + 0.5 * out.mask_cldice_loss
    else:
        assert out.mask_cldice_loss is None
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, expected)
    assert out["loss"] is out.loss and "mask_logits" in out.keys()


def test_a_sample_can_carry_several_seg_tokens(tokenizer):
    model, processor = tiny(tokenizer)
    images, masks = examples([(120, 90), (64, 80)])
    answers = ["Sure, it is [SEG].", "[SEG] and [SEG]."]
    batch = processor(
        images,
        [prompts.segmentation_prompt("x")] * 2,
        answers=answers,
        masks=[masks[0], np.stack([masks[1], 1 - masks[1]])],
    )
    out = model(**batch)
    assert out.seg_counts.tolist() == [1, 2] and out.mask_logits.shape[0] == 3


def test_mask_count_must_match_seg_count(tokenizer):
    model, processor = tiny(tokenizer)
    images, masks = examples([(64, 64)])
    batch = processor(images, [prompts.segmentation_prompt("x")], answers=["[SEG] [SEG]"], masks=masks)
    with pytest.raises(ValueError, match="2 \\[SEG\\] tokens but 1 ground-truth masks"):
        model(**batch)


def test_bf16_forward_and_backward(tokenizer):
    model, processor = tiny(tokenizer)
    model.to(torch.bfloat16)
    out = model(**training_batch(processor, [(100, 140)]).to("cpu", torch.bfloat16))
    out.loss.backward()
    assert out.mask_logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)


def test_compiling_blocks_keeps_the_checkpoint_keys(tokenizer):
    model, _ = tiny(tokenizer)
    keys = list(model.state_dict())
    model.compile_blocks(llm_layers=True)
    assert list(model.state_dict()) == keys  # torch.compile(module) would have added `_orig_mod.` prefixes
    compiled = [model.vision_model, *model.language_model.model.layers]
    assert all(module._compiled_call_impl is not None for module in compiled)
    assert model.language_model._compiled_call_impl is None  # the LLM's head and embeddings stay eager
    assert model.get_sam2_features._torchdynamo_orig_callable.__func__ is Sa2VAModel.get_sam2_features


class CallCounter(torch.overrides.TorchFunctionMode):
    """Counts calls of one torch function."""

    def __init__(self, function):
        super().__init__()
        self.function, self.calls = function, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func is self.function
        return func(*args, **(kwargs or {}))


def encoder_mlps(model: Sa2VAModel) -> list[torch.nn.Module]:
    encoders = [model.vision_model, model.grounding_encoder.vision_encoder]
    return [m for encoder in encoders for m in encoder.modules() if type(m).__name__.endswith(("MLP", "FeedForward"))]


def first_linears(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [getattr(m, "proj_in", None) or m.fc1 for m in encoder_mlps(model)]


def test_fused_encoder_gelu_keeps_keys_and_outputs_and_trains(tokenizer):
    model, processor = tiny(tokenizer, **SA2VA_RECIPE)
    apply_training_recipe(model)
    keys = list(model.state_dict())
    batch = training_batch(processor, [(96, 128)])
    side = model.config.sam2_config.vision_config.backbone_config.image_size[0]
    pixels = torch.randn(2, 3, side, side)
    with torch.no_grad():
        want = [model.get_image_features(batch.pixel_values), *model.get_sam2_features(pixels)]

    mlps = len(encoder_mlps(model))
    assert model.fuse_encoder_gelu() == mlps > 0
    assert list(model.state_dict()) == keys
    assert all(type(linear) is GeluLinear for linear in first_linears(model))
    # The SAM2 mask decoder's MLPs (ReLU, trained) stay as they were.
    assert not any(isinstance(m, GeluLinear) for m in model.grounding_encoder.mask_decoder.modules())
    with torch.no_grad(), CallCounter(torch._addmm_activation) as counter:
        got = [model.get_image_features(batch.pixel_values), *model.get_sam2_features(pixels)]
    assert counter.calls == mlps
    for g, w in zip(got, want, strict=True):  # the CPU computes exact GELU: only the matmul's rounding differs
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)

    # A training step with frozen encoders takes the fused path; the trained parts still get gradients.
    model.train()
    with CallCounter(torch._addmm_activation) as counter:
        model(**batch).loss.backward()
    assert counter.calls == mlps
    assert all(p.grad is not None for p in model.text_hidden_fcs.parameters())


def test_fused_encoder_gelu_falls_back_where_gradients_flow(tokenizer):
    model, processor = tiny(tokenizer)  # from scratch: the encoders train
    model.fuse_encoder_gelu()
    model.train()
    with CallCounter(torch._addmm_activation) as counter:
        model(**training_batch(processor, [(96, 128)])).loss.backward()
    assert counter.calls == 0
    assert all(p.grad is not None for mlp in encoder_mlps(model) for p in mlp.parameters())

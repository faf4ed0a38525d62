"""Tokenizer, InternVL tiling and the batch the processor builds."""

import numpy as np
import pytest
import torch

from vesselseg.model import Sa2VAProcessor, prompts
from vesselseg.model.modeling import IGNORE_INDEX
from vesselseg.model.presets import preset_config
from vesselseg.model.processing import tile_grid
from vesselseg.model.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def processor_for(tokenizer, **overrides) -> Sa2VAProcessor:
    return Sa2VAProcessor(preset_config("tiny", tokenizer, **overrides), tokenizer)


def test_tokenizer_keeps_special_tokens_whole_and_decodes_exactly(tokenizer):
    for token in prompts.SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1
    text = prompts.user_turn(prompts.segmentation_prompt("the retinal vessels")) + prompts.assistant_reply(
        prompts.FORCED_ANSWER
    )
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer("Ünïcode 123 ⚕", add_special_tokens=False).input_ids) == "Ünïcode 123 ⚕"
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()


@pytest.mark.parametrize(
    ("width", "height", "max_tiles", "grid"),
    [
        (448, 448, 12, (1, 1)),
        (896, 448, 12, (2, 1)),
        (448, 1344, 12, (1, 3)),
        (1000, 500, 1, (1, 1)),
        (800, 800, 12, (2, 2)),
        (1600, 1600, 12, (3, 3)),
        (300, 300, 12, (1, 1)),
    ],
)
def test_tile_grid_picks_the_closest_aspect_ratio(width, height, max_tiles, grid):
    assert tile_grid(width, height, 448, 1, max_tiles) == grid


def test_tiles_add_a_thumbnail_only_when_there_are_several(tokenizer):
    processor = processor_for(tokenizer, max_tiles=6, use_thumbnail=True)
    wide = np.zeros((100, 300, 3), np.uint8)
    assert processor.image_tiles(wide).shape == (3 + 1, 3, 112, 112)
    assert processor.image_tiles(np.zeros((100, 100, 3), np.uint8)).shape == (1, 3, 112, 112)


def test_batch_expands_images_supervises_only_answers_and_keeps_native_masks(tokenizer):
    processor = processor_for(tokenizer)
    images = [np.full((60, 80, 3), 200, np.uint8), np.zeros((90, 50, 3), np.uint8)]
    masks = [np.eye(60, 80, dtype=np.uint8) * 255, np.ones((90, 50), np.uint8)]
    answers = [prompts.FORCED_ANSWER, "Sure, [SEG]."]
    batch = processor(images, [prompts.segmentation_prompt("vessels")] * 2, answers=answers, masks=masks)

    config = processor.config
    assert batch.pixel_values.shape == (2, 3, config.tile_size, config.tile_size)
    assert batch.sam2_pixel_values.shape == (2, 3, config.sam2_image_size, config.sam2_image_size)
    assert ((batch.input_ids == config.image_token_id).sum(dim=1) == config.tokens_per_tile).all()
    for row, answer in enumerate(answers):
        supervised = batch.labels[row][batch.labels[row] != IGNORE_INDEX].tolist()
        assert supervised == processor.answer_ids(answer)
        assert tokenizer.decode(supervised) == prompts.assistant_reply(answer)
        length = int(batch.attention_mask[row].sum())
        assert (batch.input_ids[row, length:] == tokenizer.pad_token_id).all()
    assert [m.shape for m in batch.gt_masks] == [(1, 60, 80), (1, 90, 50)]
    assert batch.gt_masks[0].sum() == 60 and set(batch.gt_masks[0].unique().tolist()) == {0.0, 1.0}

    moved = batch.to("cpu", torch.bfloat16)
    assert moved.pixel_values.dtype == torch.bfloat16 and moved.input_ids.dtype == torch.long
    assert set(moved) == {"input_ids", "attention_mask", "pixel_values", "sam2_pixel_values", "labels", "gt_masks"}


def test_prompt_without_answer_ends_at_the_assistant_turn(tokenizer):
    processor = processor_for(tokenizer)
    batch = processor([np.zeros((32, 32, 3), np.uint8)], [prompts.segmentation_prompt("vessels")])
    assert batch.labels is None and batch.gt_masks is None
    text = tokenizer.decode(batch.input_ids[0])
    assert text.endswith(f"{prompts.IM_START}assistant\n")
    assert text.count(prompts.IMG_CONTEXT) == processor.config.tokens_per_tile


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(images=[np.zeros((8, 8), np.uint8)], prompts=["<image>"]), "uint8 H×W×3"),
        (dict(images=[np.zeros((8, 8, 3), np.uint8)], prompts=["no image"]), "exactly one <image>"),
        (dict(images=[np.zeros((8, 8, 3), np.uint8)], prompts=["<image>"], masks=[np.zeros((4, 8))]), "mask"),
        (dict(images=[np.zeros((8, 8, 3), np.uint8)], prompts=["<image>", "<image>"]), "1 images but 2 prompts"),
    ],
)
def test_bad_inputs_are_named(tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        processor_for(tokenizer)(**kwargs)

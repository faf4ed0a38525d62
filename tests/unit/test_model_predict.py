"""Prediction modes, native-size outputs, and the save → load round trip."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from vesselseg.model import Sa2VAConfig, Sa2VAModel, Sa2VAProcessor, prompts
from vesselseg.model.predict import predict
from vesselseg.model.presets import preset_config
from vesselseg.model.tokenizer import build_tokenizer

VESSELS = prompts.segmentation_prompt("the blood vessels")
LESIONS = prompts.segmentation_prompt("the lesions")
NO_OBJECT = "There is no such object in this image."


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = preset_config("tiny", tokenizer)
    return Sa2VAModel(config), Sa2VAProcessor(config, tokenizer)


def images(sizes, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.fixture(scope="module")
def answering(tiny):
    """The tiny model taught two answers: a [SEG] for vessels, a refusal for lesions (LM loss only)."""
    model, processor = tiny
    torch.manual_seed(0)
    config = preset_config("tiny", processor.tokenizer, bce_loss_weight=0.0, dice_loss_weight=0.0)
    model = Sa2VAModel(config)
    # The same image under both prompts, so that only the text can tell the answers apart.
    batch = processor(images([(90, 120)]) * 2, [VESSELS, LESIONS], answers=[prompts.FORCED_ANSWER, NO_OBJECT])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    return model, processor


@pytest.mark.parametrize("mode", ["forced", "generate"])
def test_probabilities_come_back_at_native_size(tiny, mode):
    model, processor = tiny
    sizes = [(97, 131), (160, 90), (64, 64)]
    results = predict(model, processor, images(sizes), [VESSELS] * 3, mode=mode, batch_size=2, max_new_tokens=4)
    assert len(results) == 3
    for result, size in zip(results, sizes):
        assert result.seg_count == len(result.probabilities)
        for probabilities in result.probabilities:
            assert probabilities.shape == size and probabilities.dtype == np.float32
            assert 0 <= probabilities.min() and probabilities.max() <= 1
    if mode == "forced":
        assert all(r.text == prompts.FORCED_ANSWER and r.seg_count == 1 for r in results)


def test_generate_gives_the_forced_mask_when_it_writes_the_forced_answer(answering):
    model, processor = answering
    image = images([(90, 120)])
    forced = predict(model, processor, image, [VESSELS], mode="forced")[0]
    generated = predict(model, processor, image, [VESSELS], mode="generate")[0]
    assert generated.text == forced.text == prompts.FORCED_ANSWER
    assert generated.seg_count == 1
    np.testing.assert_array_equal(generated.probabilities[0], forced.probabilities[0])


def test_an_answer_without_seg_gives_no_mask_and_is_counted(answering):
    model, processor = answering
    result = predict(model, processor, images([(90, 120)]), [LESIONS], mode="generate")[0]
    assert result.text == NO_OBJECT
    assert result.seg_count == 0 and result.probabilities == []


def test_save_and_load_round_trip_is_exact(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path, max_shard_size="1MB")
    processor.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert AutoConfig.from_pretrained(tmp_path).model_type == Sa2VAConfig.model_type

    loaded = AutoModel.from_pretrained(tmp_path)
    loaded_processor = Sa2VAProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, Sa2VAModel)
    assert loaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)

    rng = np.random.default_rng(1)
    sample = images([(100, 70)])
    mask = [(rng.random((100, 70)) < 0.2).astype(np.uint8)]
    batch = processor(sample, [VESSELS], answers=[prompts.FORCED_ANSWER], masks=mask)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    for field in ("loss", "lm_logits", "mask_logits"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    first = predict(model, processor, sample, [VESSELS])[0].probabilities[0]
    second = predict(loaded, loaded_processor, sample, [VESSELS])[0].probabilities[0]
    np.testing.assert_array_equal(first, second)

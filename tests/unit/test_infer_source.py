"""Random-weight presets for the GPU benchmarks: seeded weights and the mask-head gain that spreads their maps."""

from __future__ import annotations

import torch

from vesselseg.infer import RandomPreset, SyntheticImages
from vesselseg.infer.source import MASK_HEAD_OUTPUT
from vesselseg.model.prompts import FORCED_ANSWER, segmentation_prompt


def _logits(preset: RandomPreset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model, processor = preset.load(None, torch.float32)
    image = SyntheticImages(70, 64).image("a")
    batch = processor([image], [segmentation_prompt("vessels")], answer_ids=[processor.answer_ids(FORCED_ANSWER)])
    with torch.no_grad():
        return model(**{**batch, "labels": None}).mask_logits, model.state_dict()


def test_mask_gain_scales_the_logits_and_touches_nothing_else() -> None:
    plain, plain_weights = _logits(RandomPreset(name="tiny"))
    spread, spread_weights = _logits(RandomPreset(name="tiny", mask_gain=1000.0))
    assert plain.abs().max() < 0.01, "random weights give logits near zero: the reason for the gain"
    torch.testing.assert_close(spread, 1000.0 * plain, rtol=1e-3, atol=1e-5)
    scaled = sorted(name for name in plain_weights if not torch.equal(plain_weights[name], spread_weights[name]))
    assert scaled and all(MASK_HEAD_OUTPUT.search(name) and name.endswith("weight") for name in scaled), scaled

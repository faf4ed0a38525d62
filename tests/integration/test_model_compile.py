"""torch.compile of the SAM2 encoder gives the eager features (inductor builds C++ kernels in a compiler process,
so this lives in the integration tier)."""

import torch

from tests.unit.test_model_architecture import tiny
from vesselseg.model.tokenizer import build_tokenizer


def test_compiled_sam2_features_match_eager() -> None:
    model, _ = tiny(build_tokenizer())
    side = model.config.sam2_config.vision_config.backbone_config.image_size[0]
    pixels = torch.randn(2, 3, side, side)
    with torch.no_grad():
        eager = model.get_sam2_features(pixels)
        model.compile_blocks(llm_layers=False)
        compiled = model.get_sam2_features(pixels)
    assert [f.shape for f in compiled] == [f.shape for f in eager]
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

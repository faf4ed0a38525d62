"""Each check of tests/unit/test_official_parity.py on its own, for whichever vesselseg is importable: the record of
which checks fail on code from before the parity fixes (the test stops at a case's first failure).

    PYTHONPATH=src .venv/bin/python benchmarks/official_parity_checks.py
    git worktree add /tmp/old <commit>; PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/official_parity_checks.py

Code older than the fixes lacks `generate_answer` (then `_generate`) and `normalize_sam2_input` (then the SAM2
input is the processor's, as that code fed it to SAM2); `generate` uses `predict`'s default `max_new_tokens`.
"""

import hashlib
import importlib
import inspect
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_official_parity import EXPECTED, FAMILIES, FIXTURES, IMAGES, official_tiny_sam2  # noqa: E402

from vesselseg.model import Sa2VAModel, Sa2VAProcessor  # noqa: E402
from vesselseg.model.official import import_official  # noqa: E402

predict_module = importlib.import_module("vesselseg.model.predict")
generate = getattr(predict_module, "generate_answer", None) or predict_module._generate
MAX_NEW_TOKENS = inspect.signature(predict_module.predict).parameters["max_new_tokens"].default


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def checks(model, processor, expected: dict, name: str, summary: dict) -> dict:
    pixels = np.asarray(Image.open(FIXTURES / f"{name}.png").convert("RGB"))
    prompt = EXPECTED["prompt"]
    tiles = processor.image_tiles(pixels)
    sam2_input = processor.sam2_image(pixels)[None]
    if hasattr(model, "normalize_sam2_input"):
        sam2_input = model.normalize_sam2_input(sam2_input)
    answer = expected[f"{name}.generated_ids"].tolist()[:-1]
    batch = processor([pixels], [prompt], answer_ids=[answer]).to("cpu", torch.float32)
    with torch.no_grad():
        generated = generate(model, processor, pixels, prompt, MAX_NEW_TOKENS)
        embeddings = model.embed_inputs(batch.input_ids, batch.pixel_values)
        hidden = model.language_model.get_decoder()(inputs_embeds=embeddings).last_hidden_state
        seg = hidden[batch.input_ids == model.config.seg_token_id]
        logits = model(**{**batch, "labels": None}).mask_logits
    [result] = predict_module.predict(model, processor, [pixels], [prompt])
    official = np.unpackbits(expected[f"{name}.masks_packed"].numpy(), axis=-1)[..., : pixels.shape[1]].astype(bool)
    ious = [
        float(((p > 0.5) & o).sum() / max(((p > 0.5) | o).sum(), 1))
        for p, o in zip(result.probabilities, official, strict=False)
    ]
    return {
        "tiles identical": sha256(tiles) == summary["tiles_sha256"],
        "SAM2 input identical": sha256(sam2_input[0]) == summary["sam2_input_sha256"],
        "prompt ids identical": processor.prompt_ids(prompt, len(tiles)) == expected[f"{name}.input_ids"].tolist(),
        f"generated ids identical (max_new_tokens {MAX_NEW_TOKENS})": generated
        == expected[f"{name}.generated_ids"].tolist(),
        "[SEG] states max |diff|": f"{(seg - expected[f'{name}.seg_hidden']).abs().max().item():.1e}",
        "low-res logits max |diff|": f"{(logits - expected[f'{name}.lowres_logits']).abs().max().item():.1e}",
        "masks (predict's default mode), IoU": f"{result.seg_count} vs {len(official)} masks, IoU "
        + ", ".join(f"{iou:.4f}" for iou in ious),
    }


def main() -> None:
    for family in FAMILIES:
        native = Path(tempfile.mkdtemp()) / "native"
        import_official(FIXTURES / family, native, sam2_config=official_tiny_sam2())
        model = Sa2VAModel.from_pretrained(native, dtype=torch.float32).eval()
        processor = Sa2VAProcessor.from_pretrained(native)
        expected = load_file(str(FIXTURES / family / "expected.safetensors"))
        for name in IMAGES:
            summary = EXPECTED["families"][family]["images"][name]
            print(family, name, json.dumps(checks(model, processor, expected, name, summary)), flush=True)
        tokenizer = processor.tokenizer
        bos = [tokenizer.bos_token_id] if getattr(model.config, "prepend_bos", False) else []
        samples = EXPECTED["families"][family]["tokenizer_samples"]
        equal = sum(bos + tokenizer(s["text"], add_special_tokens=False).input_ids == s["encode"] for s in samples)
        print(family, f"tokenizer samples encoded as the official encode (BOS as the processor adds it): "
              f"{equal} of {len(samples)}")  # fmt: skip


if __name__ == "__main__":
    main()

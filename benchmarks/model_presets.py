"""Builds every model preset on the meta device and prints its parameters per part beside the published sizes.

    python benchmarks/model_presets.py

No weights are allocated, so even `sa2va-26b` takes seconds. Published sizes are the model cards' own rounded
figures; Sa2VA itself is the InternVL2.5 model it starts from plus SAM2 Hiera-L (whose published 224.4M include
video memory modules this image-only model does not build) plus the small `text_hidden_fcs`.
"""

import torch

from vesselseg.model.modeling import Sa2VAModel
from vesselseg.model.presets import PRESETS, PUBLISHED, parameter_counts, preset_config
from vesselseg.model.tokenizer import build_tokenizer

PARTS = (
    "vision_model",
    "mlp1",
    "llm",
    "llm_embeddings+head",
    "sam2_image_encoder",
    "sam2_prompt_encoder",
    "sam2_mask_decoder",
    "text_hidden_fcs",
    "total",
)


def human(count: float) -> str:
    return f"{count / 1e9:.3f}B" if count >= 1e9 else f"{count / 1e6:.2f}M"


def main() -> None:
    tokenizer = build_tokenizer()
    rows = {}
    for name in PRESETS:
        with torch.device("meta"):
            rows[name] = parameter_counts(Sa2VAModel(preset_config(name, tokenizer)))

    print(f"{'part':<22}" + "".join(f"{name:>12}" for name in rows))
    for part in PARTS:
        print(f"{part:<22}" + "".join(f"{human(counts[part]):>12}" for counts in rows.values()))

    print("\npublished (model cards)      ours")
    for name, published in PUBLISHED.items():
        counts = rows[name]
        sam2 = counts["sam2_image_encoder"] + counts["sam2_prompt_encoder"] + counts["sam2_mask_decoder"]
        base_vlm = counts["vision_model"] + counts["mlp1"] + counts["llm"]
        print(f"{published.model}: InternVL2.5 base {human(published.total_base_vlm)} + SAM2-L "
              f"{human(published.sam2_params)} = {human(published.total_base_vlm + published.sam2_params)};"
              f" ours {human(base_vlm)} + {human(sam2)} = {human(counts['total'])}")
        print(f"  {published.vision}: {human(published.vision_params)}, ours {human(counts['vision_model'])}")
        print(f"  {published.llm}: {human(published.llm_params)}, ours {human(counts['llm'])}")
    print("\nQwen2.5 cards count tied input/output embeddings once; InternVL2.5 (and so Sa2VA) unties them, which is"
          "\nwhy the Qwen-based LLMs above are larger by one embedding matrix while the model totals agree.")


if __name__ == "__main__":
    main()

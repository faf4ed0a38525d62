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
        print(
            f"{published.model}: InternVL2.5 base {human(published.total_base_vlm)} + SAM2-L "
            f"{human(published.sam2_params)} = {human(published.total_base_vlm + published.sam2_params)};"
            f" ours {human(base_vlm)} + {human(sam2)} = {human(counts['total'])}"
        )
        print(f"  {published.vision}: {human(published.vision_params)}, ours {human(counts['vision_model'])}")
        print(f"  {published.llm}: {human(published.llm_params)}, ours {human(counts['llm'])}")
    print(
        "\nQwen2.5 cards count tied input/output embeddings once; InternVL2.5 (and so Sa2VA) unties them, which is"
        "\nwhy the Qwen-based LLMs above are larger by one embedding matrix while the model totals agree."
    )
    official_imports()


# ---------------------------------------------------------------- official-weights import (import-official)


def official_imports() -> None:
    """The parameters `import-official` gives each official release, built from its representative config.json
    (vesselseg.model.official.catalog) on the meta device, beside the published sizes."""
    from vesselseg.model.official import (
        OFFICIAL_CONFIGS,
        PUBLISHED_SIZES,
        detect_family,
        sa2va_config,
    )
    from vesselseg.model.official.catalog import release_tokens

    print("\nofficial releases as imported (config.json → native model)")
    print(
        f"{'release':<22}{'LLM as':>8}{'VLM ours':>11}{'published':>11}{'ratio':>7}"
        f"{'SAM2 ours':>11}{'SAM2-L':>9}{'total ours':>12}{'published':>11}"
    )
    for name, official in OFFICIAL_CONFIGS.items():
        tokens = release_tokens(name)
        with torch.device("meta"):
            counts = parameter_counts(Sa2VAModel(sa2va_config(official, tokens["<IMG_CONTEXT>"], tokens["[SEG]"])))
        published = PUBLISHED_SIZES[name]
        base_vlm = counts["vision_model"] + counts["mlp1"] + counts["llm"]
        sam2 = counts["sam2_image_encoder"] + counts["sam2_prompt_encoder"] + counts["sam2_mask_decoder"]
        print(
            f"{published.model:<22}{detect_family(official).native_model_type:>8}{human(base_vlm):>11}"
            f"{human(published.total_base_vlm):>11}{base_vlm / published.total_base_vlm:>7.3f}{human(sam2):>11}"
            f"{human(published.sam2_params):>9}{human(counts['total']):>12}"
            f"{human(published.total_base_vlm + published.sam2_params):>11}"
        )
    print(
        "published = the InternVL2.5 / InternVL3 base model's stated size + SAM2 Hiera-L (224.4M, whose 7.5M of"
        "\nvideo-memory parameters the import ignores by design); Sa2VA adds text_hidden_fcs (≈ d² + 256·d)."
    )


if __name__ == "__main__":
    main()

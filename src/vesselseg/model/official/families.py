"""Which kind of official Sa2VA release a Hugging Face folder holds, read from its `config.json` alone.

Every supported release is Sa2VA's `sa2va_chat` model (InternViT vision tower, `mlp1` projector, SAM2 Hiera-L,
`text_hidden_fcs`); they differ in the LLM, which decides how its tensors are laid out:

| family      | official `llm_config.architectures` | native LLM | releases                                      |
|-------------|-------------------------------------|------------|-----------------------------------------------|
| `qwen2`     | `Qwen2ForCausalLM`                  | `qwen2`    | Sa2VA-1B, Sa2VA-4B, Sa2VA-InternVL3-2B/8B/14B |
| `internlm2` | `InternLM2ForCausalLM`              | `llama`    | Sa2VA-8B, Sa2VA-26B                           |

Sa2VA's Qwen2.5-VL and Qwen3-VL releases use another vision tower and are refused with a clear message.
"""

from dataclasses import dataclass
from typing import Any, Literal

from vesselseg.model.official.errors import OfficialImportError

FamilyName = Literal["qwen2", "internlm2"]

OFFICIAL_MODEL_TYPE = "sa2va_chat"
OFFICIAL_VISION_ARCHITECTURE = "InternVisionModel"


@dataclass(frozen=True)
class Family:
    name: FamilyName
    llm_architecture: str  # `llm_config.architectures[0]` in the official config.json
    native_model_type: str  # transformers model type the LLM becomes
    releases: tuple[str, ...]


FAMILIES: dict[FamilyName, Family] = {
    "qwen2": Family(
        "qwen2",
        "Qwen2ForCausalLM",
        "qwen2",
        ("Sa2VA-1B", "Sa2VA-4B", "Sa2VA-InternVL3-2B", "Sa2VA-InternVL3-8B", "Sa2VA-InternVL3-14B"),
    ),
    "internlm2": Family("internlm2", "InternLM2ForCausalLM", "llama", ("Sa2VA-8B", "Sa2VA-26B")),
}


def _first_architecture(section: dict[str, Any]) -> str | None:
    architectures = section.get("architectures") or [None]
    return architectures[0]


def detect_family(config: dict[str, Any], source: str = "config.json") -> Family:
    """The family of an official `config.json` (as a dict); refuses anything that is not a supported Sa2VA."""
    model_type = config.get("model_type")
    if model_type != OFFICIAL_MODEL_TYPE:
        raise OfficialImportError(
            f"{source}: model_type is {model_type!r}, not {OFFICIAL_MODEL_TYPE!r}; this is not an official Sa2VA "
            "Hugging Face folder"
        )
    for section in ("vision_config", "llm_config"):
        if not isinstance(config.get(section), dict):
            raise OfficialImportError(f"{source}: has no {section} section")
    vision = _first_architecture(config["vision_config"])
    if vision != OFFICIAL_VISION_ARCHITECTURE:
        raise OfficialImportError(
            f"{source}: vision_config.architectures is {vision!r}; only the InternViT releases "
            f"({OFFICIAL_VISION_ARCHITECTURE}) are supported, not Sa2VA's Qwen2.5-VL / Qwen3-VL variants"
        )
    llm = _first_architecture(config["llm_config"])
    for family in FAMILIES.values():
        if family.llm_architecture == llm:
            return family
    known = ", ".join(f"{f.llm_architecture} ({', '.join(f.releases)})" for f in FAMILIES.values())
    raise OfficialImportError(f"{source}: llm_config.architectures is {llm!r}; supported: {known}")

"""The official releases' configs → native configs: families, names, sizes, and what is refused."""

import copy

import pytest
import torch
from transformers import LlamaConfig, Qwen2Config

from vesselseg.model import Sa2VAModel, parameter_counts, preset_config
from vesselseg.model.official import (
    OFFICIAL_CONFIGS,
    PUBLISHED_SIZES,
    OfficialImportError,
    detect_family,
    identify,
    sa2va_config,
)
from vesselseg.model.official.catalog import release_tokens
from vesselseg.model.official.config import architecture_differences, check_supported
from vesselseg.model.tokenizer import build_tokenizer


def native_config(name: str):
    tokens = release_tokens(name)
    return sa2va_config(OFFICIAL_CONFIGS[name], tokens["<IMG_CONTEXT>"], tokens["[SEG]"])


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_every_release_imports_to_its_published_size(name):
    official = OFFICIAL_CONFIGS[name]
    family = detect_family(official)
    assert (
        identify(official) == name
        and name.upper().replace("SA2VA", "Sa2VA").replace("INTERNVL", "InternVL") in family.releases
    )
    config = native_config(name)
    assert isinstance(config.text_config, Qwen2Config if family.name == "qwen2" else LlamaConfig)
    assert config.text_config.rope_parameters == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6}
    with torch.device("meta"):
        counts = parameter_counts(Sa2VAModel(config))
    published = PUBLISHED_SIZES[name]
    assert counts["vision_model"] + counts["mlp1"] + counts["llm"] == pytest.approx(published.total_base_vlm, rel=0.015)


@pytest.mark.parametrize("name", ["sa2va-1b", "sa2va-4b", "sa2va-8b", "sa2va-26b"])
def test_imports_have_the_native_presets_shapes(name):
    """The random-weight presets were built to the official shapes; an import must give exactly those."""
    imported, preset = native_config(name), preset_config(name, build_tokenizer())
    with torch.device("meta"):
        ours = {k: v.shape for k, v in Sa2VAModel(imported).state_dict().items()}
        theirs = {k: v.shape for k, v in Sa2VAModel(preset).state_dict().items()}
    assert ours == theirs


def _changed(path: str, value) -> dict:
    config = copy.deepcopy(OFFICIAL_CONFIGS["sa2va-4b"])
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    return config


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("model_type", "internvl_chat", "not an official Sa2VA"),
        ("vision_config.architectures", ["Qwen2_5_VisionTransformerPretrainedModel"], "Qwen2.5-VL / Qwen3-VL"),
        ("llm_config.architectures", ["Phi3ForCausalLM"], "supported: Qwen2ForCausalLM"),
    ],
)
def test_unsupported_releases_are_named(path, value, message):
    with pytest.raises(OfficialImportError, match=message):
        detect_family(_changed(path, value))


@pytest.mark.parametrize(
    "path,value",
    [("ps_version", "v1"), ("select_layer", -2), ("use_llm_lora", 128), ("llm_config.tie_word_embeddings", True)],
)
def test_options_the_native_model_lacks_are_refused(path, value):
    with pytest.raises(OfficialImportError, match=path.split(".")[-1]):
        check_supported(_changed(path, value))


def test_a_preset_names_what_differs():
    differences = architecture_differences(OFFICIAL_CONFIGS["sa2va-8b"], "sa2va-26b")
    assert "llm_config.num_hidden_layers: 32 (the release has 48)" in differences
    assert "vision_config.qk_normalization: False (the release has True)" in differences
    assert architecture_differences(OFFICIAL_CONFIGS["sa2va-8b"], "sa2va-8b") == []

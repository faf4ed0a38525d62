"""The model a run starts from: a preset with random weights, a published Hugging Face folder, or (later) an
official Sa2VA checkpoint.

    preset:<name>        `build_preset(name)`; the `sam2` geometry and any `model_overrides` apply
    s3://…/              a published model folder (config, tokenizer, safetensors), e.g. the convert stage's
                         output; only the training recipe (loss, freezing, LoRA) may be overridden
    official:<folder>    official Sa2VA weights (local folder or s3://), imported once into a native artifact

Loading is strict: a folder whose weights do not match its config (missing, unexpected or mis-shaped tensors)
is an error, never silently completed with random weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from vesselseg.errors import StorageError
from vesselseg.finetune.config import Sam2Geometry
from vesselseg.finetune.errors import TrainingError
from vesselseg.model import Sa2VAConfig, Sa2VAModel, Sa2VAProcessor, build_tokenizer, preset_config
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, resolve
from vesselseg.storage.artifact import content_key

log = logging.getLogger(__name__)

PRESET, OFFICIAL = "preset:", "official:"
# Fields of a trained model that describe how to train it further, not its architecture.
RECIPE_FIELDS = frozenset(
    {
        "mask_loss", "lm_loss_weight", "bce_loss_weight", "dice_loss_weight", "cldice_loss_weight",
        "cldice_iterations", "freeze_vision_model", "freeze_llm", "freeze_projector", "freeze_sam2_encoder",
        "freeze_sam2_decoder", "use_llm_lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
        "lora_modules_to_save",
    }
)  # fmt: skip
# Keys transformers writes that say nothing about the model (versions, paths, load-time dtype).
_VOLATILE_KEYS = frozenset({"transformers_version", "_name_or_path", "architectures", "dtype"})


def with_sam2_geometry(config: Sa2VAConfig, geometry: Sam2Geometry) -> None:
    """Sets SAM2's square input size and Hiera's patch-embedding stride (SAM2's is 4).

    The encoder's three feature maps sit at stride, 2·stride and 4·stride, the prompt grid at 4·stride, and the
    decoder's masks at the stride: a larger input gives finer masks; a larger stride makes the encoder cheaper
    (512 px at stride 8 costs what 256 px at stride 4 does). Hiera's windowed positional embeddings are
    interpolated to the new grid, so no other shape changes.
    """
    sam2 = config.sam2_config
    backbone = sam2.vision_config.backbone_config
    size = geometry.image_size or config.sam2_image_size
    stride = geometry.patch_stride or backbone.patch_stride[0]
    if stride != backbone.patch_stride[0]:
        # A kernel of 2·stride − 1 with "same" padding overlaps neighbouring patches as SAM2's 7×7 / 4 does.
        backbone.patch_stride = [stride, stride]
        backbone.patch_kernel_size = [2 * stride - 1] * 2
        backbone.patch_padding = [stride - 1] * 2
    if size % (8 * stride):
        raise TrainingError(f"sam2.image_size {size} must be a multiple of 8 × patch stride {stride}")
    backbone.image_size = [size, size]
    sam2.vision_config.backbone_feature_sizes = [[size // (stride * f)] * 2 for f in (1, 2, 4)]
    sam2.prompt_encoder_config.image_size = size
    sam2.prompt_encoder_config.patch_size = 4 * stride


def base_model_ref(spec: str, store: ObjectStore) -> InputRef | None:
    """The pinned artifact of an `s3://` base model, None for a preset; refuses unknown forms."""
    if spec.startswith(PRESET):
        return None
    if spec.startswith(OFFICIAL):
        return _imported_official(spec.removeprefix(OFFICIAL), store)
    if spec.startswith("s3://"):
        return resolve(store, spec)
    raise TrainingError(f"base_model {spec!r} must be preset:<name>, an s3:// model folder, or official:<folder>")


def official_artifact_uri(src: str, store: ObjectStore) -> str:
    """Where the native import of the official folder `src` lives; the finetune stage imports it there once.

    The artifact is named by the source's location: re-import (delete the artifact) after replacing the
    files behind the same path.
    """
    return store.uri(f"vesselseg/models/official-{content_key(src)}/")


def _imported_official(src: str, store: ObjectStore) -> InputRef:
    out = official_artifact_uri(src, store)
    try:
        return resolve(store, out)
    except StorageError as err:
        raise TrainingError(
            f"base_model official:{src} has no native import at {out}: the finetune stage imports it first "
            f"(or `vesselseg import-official --set src={src} --set out={out}`)"
        ) from err


def _artifact_config(spec: str, folder: Path, overrides: dict[str, Any]) -> Sa2VAConfig:
    not_recipe = sorted(set(overrides) - RECIPE_FIELDS)
    if not_recipe:
        raise TrainingError(
            f"model_overrides {not_recipe} would change the architecture of the trained model at {spec}; "
            f"only training-recipe fields may be overridden: {', '.join(sorted(RECIPE_FIELDS))}"
        )
    config = Sa2VAConfig.from_pretrained(folder)
    for field, value in overrides.items():
        setattr(config, field, value)
    return config


def _preset_config(spec: str, overrides: dict[str, Any], sam2: Sam2Geometry) -> Sa2VAConfig:
    unknown = sorted(set(overrides) - set(Sa2VAConfig.__annotations__))
    if unknown:
        raise TrainingError(f"model_overrides {unknown} are not Sa2VAConfig fields")
    try:
        config = preset_config(spec.removeprefix(PRESET), build_tokenizer(), **overrides)
    except ValueError as err:
        raise TrainingError(f"base_model {spec!r}: {err}") from err
    if sam2.is_set:
        with_sam2_geometry(config, sam2)
    return config


def model_config(
    spec: str, overrides: dict[str, Any], sam2: Sam2Geometry, store: ObjectStore, folder: Path
) -> Sa2VAConfig:
    """The Sa2VAConfig a run trains, without building weights (of an artifact, only config.json is fetched)."""
    if spec.startswith(PRESET):
        return _preset_config(spec, overrides, sam2)
    ref = base_model_ref(spec, store)
    if sam2 is not None and sam2.is_set:
        raise TrainingError(f"sam2 geometry applies to presets; the model at {spec} fixes its own SAM2 input")
    assert ref is not None
    fetch_dir(store, ref, folder, only=["config.json"])
    return _artifact_config(spec, folder, overrides)


def fetch_base_model(ref: InputRef | None, store: ObjectStore, folder: Path) -> None:
    """Downloads (and verifies) a base model artifact; presets have nothing to fetch."""
    if ref is not None:
        fetch_dir(store, ref, folder)


def load_base_model(
    spec: str,
    overrides: dict[str, Any] | None = None,
    sam2: Sam2Geometry | None = None,
    folder: Path | None = None,
    store: ObjectStore | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    ref: InputRef | None = None,
) -> tuple[Sa2VAModel, Sa2VAProcessor]:
    """The model a run starts from and its processor, before the training recipe is applied.

    A preset is built directly on `device` in `dtype` (an 8-GPU node would otherwise hold eight fp32 copies in host
    memory); an artifact is read from `folder`, fetched there first unless `fetch_base_model` already did. `ref` is
    the artifact the run pinned (`base_model_ref`); without it the spec is resolved here. `store` (by default one
    from the environment) is used only to resolve the spec or to fill an empty `folder`.
    """
    overrides = overrides or {}
    if spec.startswith(PRESET):
        config = _preset_config(spec, overrides, sam2 or Sam2Geometry())
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = Sa2VAModel(config)
        finally:
            torch.set_default_dtype(previous)
        return model, Sa2VAProcessor(config, build_tokenizer())
    if ref is None:
        store = store or ObjectStore()
        ref = base_model_ref(spec, store)
    if sam2 is not None and sam2.is_set:
        raise TrainingError(f"sam2 geometry applies to presets; the model at {spec} fixes its own SAM2 input")
    if folder is None:
        raise TrainingError(f"loading the base model {spec} needs a local folder to fetch it into")
    if not (folder / "config.json").is_file():
        fetch_base_model(ref, store or ObjectStore(), folder)
    config = _artifact_config(spec, folder, overrides)
    model, info = Sa2VAModel.from_pretrained(folder, config=config, dtype=dtype, output_loading_info=True)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        detail = "; ".join(f"{k}: {sorted(map(str, v))[:5]}{' …' if len(v) > 5 else ''}" for k, v in problems.items())
        raise TrainingError(f"base model {spec}: its weights do not match its config.json ({detail})")
    return model.to(device), Sa2VAProcessor(config, PreTrainedTokenizerFast.from_pretrained(folder))


def config_fingerprint(config: Sa2VAConfig) -> dict[str, Any]:
    """The config as plain data without version and path noise: what two runs must share to share weights."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _VOLATILE_KEYS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(json.loads(copy.deepcopy(config).to_json_string(use_diff=False)))


def config_digest(config: Sa2VAConfig) -> str:
    return hashlib.sha256(json.dumps(config_fingerprint(config), sort_keys=True).encode()).hexdigest()


def config_differences(expected: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths where two config fingerprints differ, e.g. `sam2_config.prompt_encoder_config.image_size`."""
    differences = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, path + ".")
        elif a != b:
            differences.append(f"{path} ({b!r} in the checkpoint, {a!r} here)")
    return differences

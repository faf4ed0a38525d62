"""The training pieces that need no process group: data order, augmentation, schedule, configs, base models."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from vesselseg.finetune import AugmentConfig, FinetuneConfig, TrainingError
from vesselseg.finetune.base_model import (
    config_differences,
    config_fingerprint,
    load_base_model,
    model_config,
)
from vesselseg.finetune.config import Sam2Geometry
from vesselseg.finetune.data import DataOrder, augment
from vesselseg.finetune.engine import deepspeed_config, lr_factor, prepare_model
from vesselseg.finetune.launch import worker_env
from vesselseg.finetune.loop import check_finite, forward_context
from vesselseg.finetune.publisher import RunPublisher
from vesselseg.model import Sa2VAModel, apply_training_recipe, build_tokenizer, preset_config, prompts
from vesselseg.stages.finetune_rank import StorePublisher


def _global_batches(order: DataOrder, step: int, world: int, accumulation: int) -> list[list[int]]:
    """The sample indices each rank trains on in `step`, in micro-batch order."""
    positions = order.positions(step)
    return [
        [order.sample_index(positions[slot]) for slot in order.micro_batch(step, a, rank, world)]
        for a in range(accumulation)
        for rank in range(world)
    ]


def test_data_order_does_not_depend_on_world_size() -> None:
    order = DataOrder(n_samples=7, global_batch_size=4, micro_batch_size=1, seed=3)
    for step in (1, 2, 9):
        one = _global_batches(order, step, world=1, accumulation=4)
        two = _global_batches(order, step, world=2, accumulation=2)
        four = _global_batches(order, step, world=4, accumulation=1)
        assert sorted(sum(one, [])) == sorted(sum(two, [])) == sorted(sum(four, []))
        # Micro-batch k holds the same samples whichever rank runs it.
        assert one == two == four


def test_data_order_visits_every_sample_once_per_epoch_and_depends_on_seed() -> None:
    order = DataOrder(n_samples=6, global_batch_size=3, micro_batch_size=3, seed=0)
    first_epoch = [order.sample_index(p) for p in range(6)]
    assert sorted(first_epoch) == list(range(6))
    second_epoch = [order.sample_index(p) for p in range(6, 12)]
    assert sorted(second_epoch) == list(range(6))
    other_seed = DataOrder(6, 3, 3, seed=1)
    assert [other_seed.sample_index(p) for p in range(12)] != first_epoch + second_epoch


def _marked_image(mask: np.ndarray) -> np.ndarray:
    """An image whose red channel is exactly the mask: geometry applied to both must keep them equal."""
    image = np.full((*mask.shape, 3), 40, dtype=np.uint8)
    image[..., 0] = np.where(mask, 255, 0)
    return image


def test_augmentation_moves_image_and_mask_together() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((64, 80), dtype=bool)
    mask[10:14, 5:70] = True
    mask[20:60, 30:33] = True
    geometry_only = AugmentConfig(brightness=0, contrast=0, saturation=0, hue=0, rotation_deg=30)
    moved = 0
    for seed in range(12):
        image, out = augment(_marked_image(mask), mask, geometry_only, np.random.default_rng(seed))
        assert out.dtype == bool and out.shape == mask.shape
        red = image[..., 0] >= 128
        # Bilinear image vs nearest mask may disagree only on boundary pixels.
        assert (red != out).mean() < 0.02
        moved += int(not np.array_equal(out, mask))
    assert moved >= 10, "flips and rotations should change most draws"
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    first = augment(image, mask[:32, :32], AugmentConfig(), np.random.default_rng(5))
    again = augment(image, mask[:32, :32], AugmentConfig(), np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_colour_jitter_leaves_the_mask_alone_and_disabled_is_identity() -> None:
    mask = np.eye(32, dtype=bool)
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    colour_only = AugmentConfig(hflip=0, vflip=0, rotation_deg=0, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.1)
    jittered, same_mask = augment(image, mask, colour_only, np.random.default_rng(2))
    assert np.array_equal(same_mask, mask) and not np.array_equal(jittered, image)
    untouched, untouched_mask = augment(image, mask, AugmentConfig(enabled=False), np.random.default_rng(2))
    assert np.array_equal(untouched, image) and np.array_equal(untouched_mask, mask)


def test_learning_rate_warms_up_linearly_then_decays_by_cosine() -> None:
    factors = [lr_factor(step, total_steps=20, warmup_steps=4, min_ratio=0.1) for step in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert factors[-1] > 0.1 and lr_factor(20, 20, 4, 0.1) == pytest.approx(0.1)
    assert lr_factor(0, 10, 0, 0.0) == pytest.approx(1.0)


def test_batch_sizes_must_divide() -> None:
    with pytest.raises(ValidationError, match="not a multiple of micro_batch_size"):
        FinetuneConfig(global_batch_size=6, micro_batch_size=4)
    config = FinetuneConfig(global_batch_size=6, micro_batch_size=2)
    assert config.gradient_accumulation(3) == 1 and config.gradient_accumulation(1) == 3
    with pytest.raises(TrainingError, match=r"global_batch_size 6 is not a multiple of micro_batch_size 2 × 2 ranks"):
        config.gradient_accumulation(2)
    with pytest.raises(ValidationError, match="final_model 'best' needs validation"):
        FinetuneConfig(final_model="best", val_every=None)
    with pytest.raises(TrainingError, match="bf16 needs GPUs"):
        FinetuneConfig(precision="bf16").resolve_precision(on_gpu=False)


def test_compiling_under_zero_3_is_refused() -> None:
    with pytest.raises(ValidationError, match="torch_compile 'encoders' is not supported with zero_stage 3"):
        FinetuneConfig(torch_compile="encoders", zero_stage=3)
    FinetuneConfig(torch_compile="encoders_and_llm", zero_stage=2)


def test_deepspeed_config_follows_the_finetune_config() -> None:
    config = FinetuneConfig(global_batch_size=8, micro_batch_size=2, zero_stage=3, lr=1e-4, gradient_clipping=0.5)
    ds = deepspeed_config(config, world_size=2, precision="bf16", on_gpu=True)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        8,
        2,
        2,
    )
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["check_grad_overflow"] is False  # the loop's check_finite stands in for it
    assert ds["optimizer"] == {
        "type": "AdamW",
        "params": {
            "lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "torch_adam": True, "fused": True,
        },
    }  # fmt: skip

    def fused(fused_adam: bool | None, on_gpu: bool) -> bool:
        chosen = config.model_copy(update={"fused_adam": fused_adam})
        return deepspeed_config(chosen, 2, "fp32", on_gpu)["optimizer"]["params"]["fused"]

    assert not fused(None, on_gpu=False)
    assert fused(True, on_gpu=False) and not fused(False, on_gpu=True)


@pytest.mark.parametrize(
    ("setting", "on_gpu", "fused"),
    [(None, False, False), (None, True, True), (False, True, False), (True, False, True)],
)
def test_the_encoder_gelu_is_fused_as_configured(setting: bool | None, on_gpu: bool, fused: bool) -> None:
    model = Sa2VAModel(preset_config("tiny", build_tokenizer()))
    prepare_model(model, FinetuneConfig(fused_encoder_gelu=setting), on_gpu)
    linear = model.grounding_encoder.vision_encoder.backbone.blocks[0].mlp.proj_in
    assert type(linear).__name__ == ("GeluLinear" if fused else "Linear")


@pytest.mark.parametrize(
    ("loss", "grad_norm", "shown"),
    [
        (float("nan"), 1.0, "loss nan"),
        (0.5, -1.0, "norm inf/NaN"),
        (0.5, float("inf"), "norm inf"),
        (float("inf"), None, "loss inf"),
    ],
)
def test_a_non_finite_step_stops_the_run(loss: float, grad_norm: float | None, shown: str) -> None:
    with pytest.raises(TrainingError, match=rf"step 7: .*{shown}.*before this step reaches a checkpoint"):
        check_finite(7, loss, grad_norm)
    check_finite(7, 0.5, 2.0)
    check_finite(7, 0.5, torch.tensor(2.0))
    check_finite(7, 0.5, None)  # DeepSpeed reports no norm before the first step


@pytest.mark.parametrize("geometry, logits", [({"image_size": 128}, 32), ({"image_size": 256, "patch_stride": 8}, 32)])
def test_sam2_geometry_sets_the_mask_resolution(geometry: dict, logits: int) -> None:
    model, processor = load_base_model("preset:tiny", {"mask_loss": "official_lowres"}, Sam2Geometry(**geometry))
    assert model.config.mask_loss == "official_lowres" and model.config.sam2_image_size == geometry["image_size"]
    image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    batch = processor(
        [image],
        [prompts.segmentation_prompt("blood vessels")],
        answers=[prompts.FORCED_ANSWER],
        masks=[image[..., 0] > 128],
    )
    output = apply_training_recipe(model)(**batch)
    assert output.mask_logits.shape == (1, logits, logits) and torch.isfinite(output.loss)
    with pytest.raises(TrainingError, match="must be a multiple of 8 × patch stride 8"):
        load_base_model("preset:tiny", sam2=Sam2Geometry(image_size=96, patch_stride=8))


def test_base_model_specs_that_cannot_work_are_refused() -> None:
    with pytest.raises(TrainingError, match="must be preset:<name>, an s3:// model folder"):
        load_base_model("/models/sa2va")
    with pytest.raises(TrainingError, match="unknown preset 'huge'"):
        load_base_model("preset:huge")
    with pytest.raises(TrainingError, match="model_overrides"):
        load_base_model("preset:tiny", {"no_such_field": 1})


def test_config_differences_name_the_changed_fields() -> None:
    small = config_fingerprint(model_config("preset:tiny", {}, Sam2Geometry(image_size=128), store=None, folder=None))  # type: ignore[arg-type]
    large = config_fingerprint(
        model_config("preset:tiny", {"mask_loss": "official_lowres"}, Sam2Geometry(), store=None, folder=None)
    )  # type: ignore[arg-type]
    differences = config_differences(small, large)
    assert any(
        d.startswith("sam2_config.prompt_encoder_config.image_size (256 in the checkpoint, 128 here)")
        for d in differences
    )
    assert any(d.startswith("mask_loss") for d in differences)


def test_kfp_component_compiles(tmp_path) -> None:
    from kfp import compiler

    from components import component

    path = tmp_path / "finetune.yaml"
    compiler.Compiler().compile(component("finetune"), str(path))
    text = path.read_text()
    assert "run_stage('finetune'" in text and "system.Model" in text and "system.Metrics" in text


def test_gpu_workers_get_growable_allocator_segments_unless_the_user_chose(monkeypatch) -> None:
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert worker_env(2, on_gpu=True)["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in worker_env(2, on_gpu=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    assert worker_env(2, on_gpu=True)["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"


@pytest.mark.parametrize(
    ("autocast", "on_gpu", "enabled"), [("bf16", False, True), ("off", False, False), ("bf16", True, False)]
)
def test_cpu_autocast_runs_the_forward_in_bf16_only_where_asked(autocast: str, on_gpu: bool, enabled: bool) -> None:
    config = FinetuneConfig(autocast=autocast)
    with forward_context(config, on_gpu):
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert (product.dtype == torch.bfloat16) == enabled
    # The autocast setting changes the trained weights, so it is part of the run key.
    assert config.key_fields()["autocast"] == autocast


def test_the_stage_publisher_answers_every_call_the_loop_makes_with_its_signature() -> None:
    # Nothing type-checks the Protocol here: a method missing or changed on one side would fail a run mid-way.
    wanted = {name: inspect.signature(fn) for name, fn in vars(RunPublisher).items() if not name.startswith("_")}
    assert len(wanted) >= 9
    assert {name: inspect.signature(getattr(StorePublisher, name)) for name in wanted} == wanted

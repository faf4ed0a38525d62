"""The strategy chooser and the sharded layouts: pure arithmetic on model sizes and GPU memories."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import check_device_map

from vesselseg.infer import (
    Footprint,
    Gpu,
    InferConfig,
    InferError,
    balance_layers,
    choose_plan,
    footprint_of,
    meta_model,
)
from vesselseg.infer.sharded import accelerate_device_map, balanced_device_map, device_of
from vesselseg.model import build_tokenizer, preset_config

GB = 10**9
GIB = 1 << 30


def cards(n: int, gigabytes: float) -> list[Gpu]:
    return [Gpu(index=i, total_bytes=int(gigabytes * GB), free_bytes=int(gigabytes * GB)) for i in range(n)]


@pytest.fixture(scope="module")
def presets() -> dict[str, tuple]:
    tokenizer = build_tokenizer()
    built = {}
    for name in ("sa2va-4b", "sa2va-26b"):
        model = meta_model(preset_config(name, tokenizer), torch.bfloat16)
        built[name] = (model, footprint_of(model, torch.bfloat16, (584, 565)))
    return built


def test_footprint_of_the_26b_preset_is_its_bf16_weights(presets) -> None:
    model, footprint = presets["sa2va-26b"]
    n_params = sum(p.numel() for p in model.parameters())
    assert footprint.weight_bytes == pytest.approx(2 * n_params, rel=1e-4)  # + a few fp32 buffers
    assert 25.5e9 < n_params < 26.0e9 and footprint.n_layers == 48
    # InternViT-6B on one 448-px tile costs about as much as the 20B LLM on ~300 tokens.
    assert 0.5 < footprint.vision_cost / (footprint.n_layers * footprint.layer_cost) < 2


def test_26b_on_four_80gb_cards_runs_one_replica_per_card(presets) -> None:
    plan = choose_plan(presets["sa2va-26b"][1], cards(4, 80), InferConfig())
    assert plan.strategy == "replicas" and plan.groups == [[0], [1], [2], [3]]
    assert "4 replicas" in plan.reason and "48.0 GiB" in plan.reason


def test_26b_on_four_40gb_cards_pipelines_two_copies_of_two_cards(presets) -> None:
    plan = choose_plan(presets["sa2va-26b"][1], cards(4, 40), InferConfig())
    assert plan.strategy == "pipelined"
    assert plan.groups == [[0, 1], [2, 3]] and plan.in_flight == 3
    first, second = plan.layers[0]
    assert first + second == 48 and first < second, "GPU 0 carries the vision tower and SAM2, so fewer layers"
    for group in plan.groups:
        assert (
            presets["sa2va-26b"][1].first_bytes + first * presets["sa2va-26b"][1].layer_bytes <= plan.budgets[group[0]]
        )


def test_26b_on_eight_40gb_cards_makes_four_copies(presets) -> None:
    plan = choose_plan(presets["sa2va-26b"][1], cards(8, 40), InferConfig())
    assert (plan.strategy, plan.replicas, plan.shards) == ("pipelined", 4, 2)


def test_a_40b_class_model_on_eight_40gb_cards_makes_two_copies_of_four() -> None:
    # 60 layers of 1 GiB plus a 13 GiB first part: two 40 GB cards cannot hold it, three can; 8 // 3 = 2
    # copies, and the two spare cards join them (4 GPUs each) for headroom.
    footprint = Footprint(hub_bytes=3 * GIB, vision_bytes=10 * GIB, layer_bytes=GIB, n_layers=60, vision_cost=50.0)
    plan = choose_plan(footprint, cards(8, 40), InferConfig())
    assert (plan.strategy, plan.replicas, plan.shards) == ("pipelined", 2, 4)
    assert choose_plan(footprint, cards(4, 40), InferConfig()).groups == [[0, 1, 2, 3]]


def test_a_40_gib_cap_on_80gb_cards_plans_as_on_40gb_cards(presets) -> None:
    capped = InferConfig(memory={"max_memory_gib": 40})
    assert choose_plan(presets["sa2va-26b"][1], cards(4, 80), capped).groups == [[0, 1], [2, 3]]


def test_4b_on_two_24gb_cards_runs_replicas(presets) -> None:
    plan = choose_plan(presets["sa2va-4b"][1], cards(2, 24), InferConfig())
    assert plan.strategy == "replicas" and plan.replicas == 2


def test_forced_strategies_follow_the_config(presets) -> None:
    footprint = presets["sa2va-26b"][1]
    sharded = choose_plan(footprint, cards(4, 80), InferConfig(strategy="sharded"))
    assert (sharded.strategy, sharded.groups, sharded.in_flight) == ("sharded", [[0, 1, 2, 3]], 1)
    mix = choose_plan(footprint, cards(4, 80), InferConfig(strategy="pipelined", replicas=2))
    assert (mix.strategy, mix.groups, mix.in_flight) == ("pipelined", [[0, 1], [2, 3]], 3)
    assert choose_plan(footprint, cards(4, 80), InferConfig(gpus=[1, 2])).groups == [[1], [2]]


def test_impossible_plans_fail_with_the_numbers(presets) -> None:
    footprint = presets["sa2va-26b"][1]
    with pytest.raises(InferError, match=r"replicas: a copy's weights \(48.0 GiB\) do not fit GPU 0"):
        choose_plan(footprint, cards(4, 40), InferConfig(strategy="replicas"))
    with pytest.raises(InferError, match="does not fit"):
        choose_plan(footprint, cards(1, 40), InferConfig())
    with pytest.raises(InferError, match="spreads a model over GPUs"):
        choose_plan(footprint, [], InferConfig(strategy="sharded"))
    with pytest.raises(InferError, match=r"GPUs \[7\]"):
        choose_plan(footprint, cards(2, 80), InferConfig(gpus=[7]))


def test_without_gpus_the_cpu_runs_one_or_more_processes(presets) -> None:
    footprint = presets["sa2va-4b"][1]
    assert choose_plan(footprint, [], InferConfig()).strategy == "cpu"
    plan = choose_plan(footprint, cards(2, 80), InferConfig(strategy="replicas", replicas=2, gpus=[]))
    assert (plan.strategy, plan.groups) == ("replicas", [[], []])


def test_balance_puts_equal_work_on_each_gpu() -> None:
    # The first GPU's hub costs three layers' worth: 15 units of work over 3 GPUs is 5 each.
    footprint = Footprint(hub_bytes=0, vision_bytes=0, layer_bytes=1, n_layers=12, hub_cost=3.0)
    assert balance_layers(footprint, [100, 100, 100]) == [2, 5, 5]
    # A GPU with room for 2 layers: the others share the rest, the busiest doing 7.
    split = balance_layers(footprint, [100, 2, 100])
    assert split is not None and split[1] == 2 and max(3 + split[0], split[2]) == 7 and sum(split) == 12
    assert balance_layers(footprint, [5, 5]) is None


@pytest.mark.parametrize("layout", ["balanced", "accelerate"])
def test_device_maps_cover_the_model_and_keep_the_hub_on_the_first_gpu(presets, layout) -> None:
    model, footprint = presets["sa2va-26b"]
    plan = choose_plan(footprint, cards(4, 80), InferConfig(strategy="sharded", layout=layout))
    group = plan.groups[0]
    if layout == "balanced":
        device_map = balanced_device_map(model, group, plan.layers[0])
    else:
        device_map = accelerate_device_map(model, group, plan.budgets, torch.bfloat16)
    check_device_map(model, device_map)
    for name in ("vision_model.embeddings.cls_token", "mlp1.1.weight", "language_model.model.embed_tokens.weight",
                 "language_model.model.norm.weight", "language_model.lm_head.weight", "text_hidden_fcs.0.weight",
                 "grounding_encoder.no_memory_embedding"):  # fmt: skip
        assert device_of(device_map, name) == 0, name
    layer_devices = [device_of(device_map, f"language_model.model.layers.{i}.mlp.up_proj.weight") for i in range(48)]
    assert layer_devices == sorted(layer_devices), "layers stay in order across GPUs"
    if layout == "balanced":
        assert [layer_devices.count(d) for d in group] == plan.layers[0]

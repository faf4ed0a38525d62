"""The infer stage end to end on the CPU: a published tiny model, a published dataset, the real object store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vesselseg.infer import InferConfig, InferError
from vesselseg.model import build_preset, predict, prompts
from vesselseg.predictions import PredictionSet
from vesselseg.stages import data_prep, infer
from vesselseg.stages.inputs import fetch_dataset, fetch_predictions
from vesselseg.storage import ObjectStore, publish_dir, read_manifest

SPLITS = {
    "synthetic": {"count": 8, "size": 96, "seed": 3},
    "split": {"seed": 3, "val_fraction": 0.25, "test_fraction": 0.5},
}


def _spread_maps(model) -> None:
    """Random weights give maps of 0.5 ± 0.002, where the mask is rounding noise; scaling the mask head's output
    spreads them over [0.05, 0.95], so that comparing strategies compares masks (training would take minutes)."""
    head = model.grounding_encoder.mask_decoder.output_hypernetworks_mlps[0].proj_out
    with torch.no_grad():
        head.weight *= 4e4
        head.bias *= 4e4


@pytest.fixture(scope="module", autouse=True)
def home(store_settings, tmp_path_factory):
    """The stage's model cache, resume state and scratch in a temporary work folder (the store keeps running)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VESSELSEG_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def published(store_settings, tmp_path_factory) -> dict:
    """A dataset, a tiny model published as a 'model' artifact, and its local folder."""
    store = ObjectStore(store_settings)
    prep = data_prep.run(data_prep.Config.model_validate({"data": SPLITS, "prefix": "tests/infer/datasets"}), store)
    root = tmp_path_factory.mktemp("infer")
    torch.manual_seed(0)
    model, processor = build_preset("tiny")
    _spread_maps(model)
    folder = root / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    ref, _ = publish_dir(store, folder, f"tests/infer/models/{prep.dataset.manifest_sha256[:12]}", kind="model",
                         stage="test", config={"preset": "tiny"})  # fmt: skip
    return {"dataset": prep.dataset, "model": ref, "folder": folder, "root": root}


@pytest.fixture(scope="module")
def reference(published, store_settings, tmp_path_factory) -> tuple[infer.Result, PredictionSet]:
    """One plain CPU run: the maps every other strategy must reproduce."""
    store = ObjectStore(store_settings)
    config = infer.Config(model=published["model"], dataset=published["dataset"], prefix="tests/infer/reference")
    result = infer.run(config, store)
    return result, fetch_predictions(store, result.predictions, tmp_path_factory.mktemp("reference"))


def _same_maps(a: PredictionSet, b: PredictionSet) -> None:
    assert sorted(a.table.index) == sorted(b.table.index)
    for sample_id in a.table.index:
        map_a, map_b = a.prob(sample_id), b.prob(sample_id)
        np.testing.assert_array_equal(map_a.mask_at(128), map_b.mask_at(128), err_msg=sample_id)
        difference = np.abs(map_a.levels.astype(int) - map_b.levels.astype(int)).max()
        assert difference <= 1, f"{sample_id}: maps differ by {difference}/255"


def test_native_size_maps_from_images_only(published, reference, store: ObjectStore, tmp_path: Path) -> None:
    result, predictions = reference
    assert result.plan.strategy == "cpu" and result.stats.computed == 6 and result.stats.resumed == 0
    manifest = read_manifest(store, result.predictions)
    assert manifest.kind == "predictions" and manifest.stage == "infer"
    assert manifest.inputs == {"model": published["model"], "dataset": published["dataset"]}
    read = manifest.summary["read_files"]
    assert read and all(p.startswith(("images/", "fov/")) for p in read), read
    assert not any(p.startswith("masks/") for p in read)

    dataset = fetch_dataset(store, published["dataset"], tmp_path / "ds", ["val", "test"], [])
    assert not (tmp_path / "ds" / "masks").exists(), "ground truth is never downloaded"
    assert sorted(predictions.table.index) == sorted(dataset.ids("val") + dataset.ids("test"))
    info = predictions.info
    assert info.name == "model" and info.calibrated and info.threshold == 0.5
    assert info.details["strategy"] == "cpu" and info.details["model_sha256"] == published["model"].manifest_sha256
    assert info.details["prompt"] == prompts.segmentation_prompt("blood vessels"), "the dataset's referring text"
    assert set(predictions.table["n_seg"]) == {1} and set(predictions.table["text"]) == {prompts.FORCED_ANSWER}

    # The stored map is the model's own probability at native size, rounded to 1/255.
    from vesselseg.model import Sa2VAModel, Sa2VAProcessor

    model = Sa2VAModel.from_pretrained(published["folder"])
    processor = Sa2VAProcessor.from_pretrained(published["folder"])
    sample_id = dataset.ids("test")[0]
    probability = predict(model, processor, [dataset.image(sample_id)], [info.details["prompt"]])[0].probabilities[0]
    stored = predictions.prob(sample_id)
    assert stored.shape == dataset.image(sample_id).shape[:2]
    assert np.abs(stored.levels.astype(int) - np.rint(probability * 255)).max() <= 1
    assert 0.1 < stored.mask_at(128).mean() < 0.9, "the mask is neither empty nor everything"


@pytest.mark.slow
def test_rerun_keeps_the_artifact_and_references_to_it(published, store, prefix) -> None:
    """Speeds differ on every run; they must not make a re-run replace `model-<key>` under pinned references."""
    config = infer.Config(model=published["model"], dataset=published["dataset"], prefix=prefix)
    first = infer.run(config, store)
    second = infer.run(config, store)
    assert second.predictions == first.predictions
    manifest = read_manifest(store, first.predictions)  # a reference taken before the re-run still resolves
    assert manifest.run_stats["n_images"] == first.stats.n_images


def test_replicas_on_two_cpu_processes_give_the_same_masks(published, reference, store, prefix, tmp_path) -> None:
    config = infer.Config(
        model=published["model"],
        dataset=published["dataset"],
        infer=InferConfig(strategy="replicas", replicas=2, batch_size=2),
        prefix=prefix,
    )
    single = infer.run(config.model_copy(update={"infer": InferConfig(batch_size=2), "prefix": f"{prefix}/1"}), store)
    replicas = infer.run(config, store)
    assert (replicas.plan.strategy, replicas.plan.groups) == ("replicas", [[], []])
    assert replicas.stats.computed == 6
    _same_maps(
        fetch_predictions(store, single.predictions, tmp_path / "single"),
        fetch_predictions(store, replicas.predictions, tmp_path / "replicas"),
    )
    _same_maps(reference[1], fetch_predictions(store, replicas.predictions, tmp_path / "again"))


def test_micro_batches_in_flight_give_the_same_maps(published, reference, store, prefix, tmp_path) -> None:
    config = infer.Config(
        model=str(published["folder"]),  # a local folder, as on the command line
        dataset=published["dataset"],
        infer=InferConfig(in_flight=3, batch_size=2),
        prefix=prefix,
    )
    result = infer.run(config, store)
    assert set(read_manifest(store, result.predictions).inputs) == {"dataset"}
    _same_maps(reference[1], fetch_predictions(store, result.predictions, tmp_path / "flight"))


def test_generate_mode_counts_answers_without_seg(published, store, prefix, tmp_path) -> None:
    torch.manual_seed(1)
    model, processor = build_preset("tiny")  # untrained: its answers are noise, mostly without [SEG]
    folder = tmp_path / "random"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    runs = {}
    for in_flight in (1, 2):
        config = infer.Config(
            model=str(folder),
            dataset=published["dataset"],
            infer=InferConfig(mode="generate", in_flight=in_flight, max_new_tokens=8),
            prefix=f"{prefix}/{in_flight}",
            resume_remote=False,
        )
        result = infer.run(config, store)
        runs[in_flight] = fetch_predictions(store, result.predictions, tmp_path / str(in_flight))
    table = runs[1].table
    zero = table[table["n_seg"] == 0]
    assert len(zero) > 0 and result.summary["zero_seg_images"] == len(zero) == runs[1].info.details["zero_seg_images"]
    for sample_id in zero.index:
        assert runs[1].prob(sample_id).levels.max() == 0, "no [SEG], no mask: an all-zero map"
    assert list(runs[2].table["text"]) == list(table["text"])
    _same_maps(runs[1], runs[2])


def test_resume_skips_finished_and_verified_images(published, reference, store, prefix, tmp_path) -> None:
    config = infer.Config(
        model=published["model"], dataset=published["dataset"], infer=InferConfig(batch_size=2), prefix=prefix
    )
    # Micro-batches of 2 over 6 images: shard 0 of 2 predicts batches 0 and 2, and publishes nothing.
    first = infer.run(config.model_copy(update={"shard": infer.Shard(index=0, count=2)}), store)
    assert first.predictions is None and first.stats.computed == 4
    assert not any(key.endswith("manifest.json") for key in store.list(prefix + "/"))

    # A fresh machine: the local state is gone, the object store still has the four images; one of them is
    # damaged there, so its whole batch runs again.
    state = Path(first.state)
    shutil.rmtree(state)
    partial = [k for k in store.list(prefix + "/partial/") if "/probs/" in k]
    assert len(partial) == 4
    store.put_bytes(min(partial), b"not the png the record describes")

    second = infer.run(config, store)
    assert (second.stats.resumed, second.stats.computed) == (2, 4)
    assert store.list(prefix + "/partial/") == [] and not state.exists(), "the state goes once published"
    _same_maps(reference[1], fetch_predictions(store, second.predictions, tmp_path / "resumed"))

    third = infer.run(config, store)
    assert third.stats.computed == 6, "a finished run leaves no state: running again predicts again"


def test_bad_model_inputs_fail_clearly(published, store, prefix, tmp_path) -> None:
    with pytest.raises(InferError, match="config.json is missing"):
        infer.run(infer.Config(model=str(tmp_path), dataset=published["dataset"], prefix=prefix), store)
    with pytest.raises(InferError, match="is a 'dataset' artifact, not a 'model'"):
        infer.run(infer.Config(model=published["dataset"], dataset=published["dataset"], prefix=prefix), store)
    with pytest.raises(ValueError, match="shard index 2 must be below count 2"):
        infer.Shard(index=2, count=2)


def test_kfp_components_compile(tmp_path) -> None:
    from kfp import compiler

    from components import component as stage_component
    from components.infer import infer_shard

    for component, call in ((stage_component("infer"), "run_stage('infer'"), (infer_shard, "run_infer_shard")):
        path = tmp_path / f"{component.name}.yaml"
        compiler.Compiler().compile(component, str(path))
        assert call in path.read_text()

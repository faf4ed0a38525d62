"""The stages end to end against the real object store: data-prep → baseline → evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vesselseg.errors import DataError, HonestyError
from vesselseg.stages import baseline, data_prep, evaluate, visualize
from vesselseg.stages.test_labels import label_store
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, read_manifest

SMALL = {"synthetic": {"count": 10, "size": 128, "seed": 5}, "split": {"seed": 5}}


@pytest.fixture(scope="module")
def published(store_settings) -> tuple[data_prep.Result, baseline.Result]:
    store = ObjectStore(store_settings)
    prep = data_prep.run(data_prep.Config.model_validate({"data": SMALL, "prefix": "tests/stages/datasets"}), store)
    frangi = baseline.run(baseline.Config(dataset=prep.dataset, prefix="tests/stages/predictions"), store)
    return prep, frangi


def test_data_prep_publishes_a_verified_dataset(published, store: ObjectStore, tmp_path: Path) -> None:
    prep, _ = published
    manifest = read_manifest(store, prep.dataset)
    assert manifest.kind == "dataset" and manifest.stage == "data-prep"
    paths = {f.path for f in manifest.files}
    assert {"index.parquet", "stats.json", "fingerprint.json", "annotations/val.json"} <= paths
    assert sum(p.startswith("images/") for p in paths) == 10
    assert prep.dataset.uri.endswith(prep.summary.fingerprint[:16] + "/")
    fetch_dir(store, prep.dataset, tmp_path)
    assert json.loads((tmp_path / "fingerprint.json").read_text())["fingerprint"] == prep.summary.fingerprint


def test_test_labels_are_their_own_artifact_in_their_own_bucket(published, store: ObjectStore) -> None:
    prep, _ = published
    labels = label_store(store)
    assert labels.bucket != store.bucket and prep.test_labels.uri.startswith(f"s3://{labels.bucket}/")
    manifest = read_manifest(labels, prep.test_labels)
    assert manifest.kind == "test-labels" and manifest.inputs == {"dataset": prep.dataset}
    test_ids = {f"{i}.png" for i in _test_ids(store, prep)}
    mask_files = {f.path.removeprefix("masks/") for f in manifest.files if f.path.startswith("masks/")}
    assert mask_files == test_ids and "annotations/test.json" in {f.path for f in manifest.files}
    dataset_files = {f.path for f in read_manifest(store, prep.dataset).files}
    assert not {p for p in dataset_files if p.startswith(("masks/", "masks_2nd/")) and p.split("/")[1] in test_ids}
    assert "annotations/test.json" not in dataset_files


def test_baseline_never_reads_test_truth(published, store: ObjectStore) -> None:
    prep, frangi = published
    manifest = read_manifest(store, frangi.predictions)
    assert manifest.inputs["dataset"] == prep.dataset
    read = manifest.summary["read_files"]
    assert any(p.startswith("masks/") for p in read), "the validation masks choose the threshold"
    test_ids = _test_ids(store, prep)
    assert test_ids and not any(p.endswith(f"masks/{i}.png") for i in test_ids for p in read)
    assert 0 < frangi.info.threshold < 1


def _test_ids(store: ObjectStore, prep: data_prep.Result) -> set[str]:
    entries = json.loads(
        label_store(store).get_bytes(label_store(store).key_of(prep.test_labels.uri) + "annotations/test.json")
    )
    return {entry["image"].split("/")[-1].removesuffix(".png") for entry in entries}


def test_evaluate_scores_frangi_above_all_background(published, store: ObjectStore) -> None:
    prep, frangi = published
    result = evaluate.run(
        evaluate.Config(
            dataset=prep.dataset,
            test_labels=prep.test_labels,
            predictions=[frangi.predictions],
            prefix="tests/stages/evaluations",
        ),
        store,
    )
    metrics = result.summary.metrics
    assert set(metrics) == {"frangi", "all_background", "all_foreground"}
    assert metrics["frangi"]["dice"] > metrics["all_background"]["dice"] + 0.2
    assert metrics["all_background"]["accuracy"] == pytest.approx(1 - result.summary.vessel_fraction, abs=0.05)
    assert all(check.passed for check in result.summary.honesty)
    manifest = read_manifest(store, result.evaluation)
    assert set(manifest.inputs) == {"dataset", "test_labels", "predictions:frangi"}


def test_evaluate_without_the_test_labels_is_an_error(published, store: ObjectStore) -> None:
    prep, frangi = published
    with pytest.raises(DataError, match="test split's ground truth is its own artifact"):
        evaluate.run(evaluate.Config(dataset=prep.dataset, predictions=[frangi.predictions]), store)


def _forged_predictions(
    store: ObjectStore, prep: data_prep.Result, tmp_path: Path, read_files: list[str], name: str
) -> InputRef:
    """A prediction set that copies the ground truth: what the replaced project effectively scored."""
    from vesselseg.data import PreparedDataset
    from vesselseg.metrics import ProbabilityMap
    from vesselseg.predictions import PredictionWriter, PredictorInfo
    from vesselseg.storage import publish_dir

    fetch_dir(store, prep.dataset, tmp_path / "ds")
    fetch_dir(label_store(store), prep.test_labels, tmp_path / "ds" / "test_labels")
    dataset = PreparedDataset(tmp_path / "ds")
    writer = PredictionWriter(tmp_path / name)
    for split in ("val", "test"):
        for sample_id in dataset.ids(split):
            writer.add(split, ProbabilityMap.from_probability(dataset.mask(sample_id), sample_id))
    writer.close(
        PredictorInfo(name=name, threshold=0.5, threshold_source="forged", calibrated=True, read_files=read_files)
    )
    ref, _ = publish_dir(
        store, tmp_path / name, f"tests/stages/forged/{name}", kind="predictions", stage="test", config={}
    )
    return ref


def test_evaluate_refuses_ground_truth_as_prediction(published, store: ObjectStore, tmp_path: Path) -> None:
    prep, _ = published
    forged = _forged_predictions(store, prep, tmp_path, ["images/x.png"], "copycat")
    with pytest.raises(HonestyError, match="prediction_identical_to_truth"):
        evaluate.run(
            evaluate.Config(
                dataset=prep.dataset,
                test_labels=prep.test_labels,
                predictions=[forged],
                prefix="tests/stages/evaluations",
            ),
            store,
        )
    allowed = evaluate.run(
        evaluate.Config(
            dataset=prep.dataset,
            test_labels=prep.test_labels,
            predictions=[forged],
            evaluate={
                "allow_identical_to_truth": True,
                "allow_subset_of_truth": True,
                "allow_superset_of_truth": True,
                "allow_beyond_human_agreement": True,
            },
            prefix="tests/stages/evaluations",
        ),
        store,
    )
    assert allowed.summary.metrics["copycat"]["dice"] == pytest.approx(1.0)
    assert any(
        c.name == "prediction_identical_to_truth" and not c.passed and c.allowed for c in allowed.summary.honesty
    )


def test_data_prep_bad_source_publishes_nothing(store: ObjectStore, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "masks").mkdir()
    before = store.list("tests/stages/bad/")
    with pytest.raises(DataError, match="a"):
        data_prep.run(
            data_prep.Config.model_validate(
                {"data": {"source": str(tmp_path), "layout": "generic"}, "prefix": "tests/stages/bad"}
            ),
            store,
        )
    assert store.list("tests/stages/bad/") == before


def test_visualize_refuses_predictions_the_evaluation_did_not_score(published, store: ObjectStore, tmp_path) -> None:
    """The report reuses the evaluation's per-image rows: the maps it draws must be the ones scored (same name,
    other pixels here), which the evaluation's manifest pins by hash."""
    prep, frangi = published
    scored = evaluate.run(
        evaluate.Config(
            dataset=prep.dataset,
            test_labels=prep.test_labels,
            predictions=[frangi.predictions],
            evaluate={"n_boot": 20},
            prefix="tests/stages/evaluations",
        ),
        store,
    )
    other = _forged_predictions(store, prep, tmp_path, frangi.info.read_files, "frangi")
    config = visualize.Config(
        dataset=prep.dataset,
        test_labels=prep.test_labels,
        predictions=[other],
        evaluation=scored.evaluation,
        prefix="tests/stages/reports",
    )
    with pytest.raises(DataError, match=r"did not score the prediction set .*forged/frangi"):
        visualize.run(config, store)

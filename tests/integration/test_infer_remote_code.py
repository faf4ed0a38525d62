"""The opt-in backend for official Sa2VA folders, against a fixture folder whose remote code this test writes.

The fixture follows the documented interface of the official release: `config.json` with an `auto_map`, a
`modeling_*.py` whose model has `predict_forward(image=PIL image, text=..., tokenizer=...)` returning
`{"prediction": str, "prediction_masks": [bool array (frames, H, W)]}`. Its masks are simple colour thresholds
(green below one level, red below another), so the expected union can be computed here from the same image.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vesselseg.infer import InferConfig, InferError
from vesselseg.infer.remote_code import load_remote_code
from vesselseg.model import build_tokenizer
from vesselseg.model.prompts import segmentation_prompt
from vesselseg.stages import data_prep, infer
from vesselseg.stages.inputs import fetch_predictions
from vesselseg.storage import ObjectStore, read_manifest

LEVELS = (110.0, 70.0)  # green < 110, red < 70

FIXTURE_CONFIG = textwrap.dedent('''
    """TEST FIXTURE, not an official Sa2VA config: the remote-code interface only."""
    from transformers import PreTrainedConfig


    class Sa2VAFixtureConfig(PreTrainedConfig):
        model_type = "sa2va_remote_code_fixture"

        def __init__(self, n_masks=2, **kwargs):
            self.n_masks = n_masks
            super().__init__(**kwargs)
''')

FIXTURE_MODELING = textwrap.dedent('''
    """TEST FIXTURE, not an official Sa2VA model: `predict_forward` as the official release documents it, with
    colour thresholds in place of a network. Importing it leaves a marker, so a test can tell it never ran."""
    import os
    from pathlib import Path

    import numpy as np
    import torch
    from transformers import PreTrainedModel

    from .configuration_sa2va_fixture import Sa2VAFixtureConfig

    if os.environ.get("SA2VA_FIXTURE_MARKER"):
        Path(os.environ["SA2VA_FIXTURE_MARKER"]).write_text("the fixture's remote code was imported")


    class Sa2VAFixtureModel(PreTrainedModel):
        config_class = Sa2VAFixtureConfig

        def __init__(self, config):
            super().__init__(config)
            self.levels = torch.nn.Parameter(torch.zeros(2))
            self.post_init()

        def predict_forward(self, image=None, text=None, tokenizer=None, **kwargs):
            pixels = np.asarray(image.convert("RGB"))
            masks = [pixels[..., channel] < float(self.levels[i]) for i, channel in enumerate((1, 0))]
            masks = masks[: self.config.n_masks]
            n_tokens = len(tokenizer(text).input_ids)
            answer = "Sure, " + " and ".join(["[SEG]"] * len(masks)) + f". ({n_tokens} prompt tokens)"
            return {"prediction": answer, "prediction_masks": [m[None] for m in masks]}
''')


def write_fixture_folder(folder: Path, n_masks: int = 2) -> Path:
    """A folder shaped like an official Sa2VA release (remote code + config + weights + tokenizer), as a fixture."""
    folder.mkdir(parents=True)
    (folder / "configuration_sa2va_fixture.py").write_text(FIXTURE_CONFIG)
    (folder / "modeling_sa2va_fixture.py").write_text(FIXTURE_MODELING)
    config = {
        "model_type": "sa2va_remote_code_fixture",
        "architectures": ["Sa2VAFixtureModel"],
        "auto_map": {
            "AutoConfig": "configuration_sa2va_fixture.Sa2VAFixtureConfig",
            "AutoModel": "modeling_sa2va_fixture.Sa2VAFixtureModel",
        },
        "n_masks": n_masks,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({"levels": torch.tensor(LEVELS)}, folder / "model.safetensors")
    build_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def home(store_settings, tmp_path_factory):
    """The stage's model cache, resume state and scratch in a temporary work folder (the store keeps running)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VESSELSEG_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def dataset(store_settings):
    config = {
        "synthetic": {"count": 6, "size": 64, "seed": 11},
        "split": {"seed": 11, "val_fraction": 0.34, "test_fraction": 0.34},
    }
    return data_prep.run(
        data_prep.Config.model_validate({"data": config, "prefix": "tests/infer-remote/datasets"}),
        ObjectStore(store_settings),
    ).dataset


def test_refused_without_the_explicit_opt_in(tmp_path, monkeypatch, dataset, store, prefix) -> None:
    folder = write_fixture_folder(tmp_path / "official")
    marker = tmp_path / "imported"
    monkeypatch.setenv("SA2VA_FIXTURE_MARKER", str(marker))
    config = infer.Config(model=str(folder), dataset=dataset, infer=InferConfig(backend="remote_code"), prefix=prefix)
    with pytest.raises(InferError, match="trust_remote_code: true") as refused:
        infer.run(config, store)
    assert "runs the Python files shipped in the folder" in str(refused.value)
    with pytest.raises(InferError, match="trust_remote_code"):
        load_remote_code(str(folder), False, torch.float32, [], {}, segmentation_prompt("the vessels"))
    assert not marker.exists(), "the folder's code must not even be imported"
    assert store.list(prefix + "/") == []


def test_official_folder_predicts_through_predict_forward(tmp_path, monkeypatch, dataset, store, prefix) -> None:
    folder = write_fixture_folder(tmp_path / "official")
    marker = tmp_path / "imported"
    monkeypatch.setenv("SA2VA_FIXTURE_MARKER", str(marker))
    config = infer.Config(
        model=str(folder),
        dataset=dataset,
        infer=InferConfig(backend="remote_code", trust_remote_code=True, mode="generate"),
        prefix=prefix,
        resume_remote=False,
    )
    result = infer.run(config, store)
    assert marker.exists()
    predictions = fetch_predictions(store, result.predictions, tmp_path / "out")
    assert predictions.info.calibrated is False, "thresholded masks: AUC must be reported unavailable"
    assert predictions.info.details["backend"] == "remote_code"
    assert predictions.info.details["prompt"].startswith("<image>\nPlease segment "), "the native backend's prompt"
    manifest = read_manifest(store, result.predictions)
    assert set(manifest.inputs) == {"dataset"}, "a local folder is no artifact; ground truth never is an input"

    from vesselseg.data import PreparedDataset
    from vesselseg.storage import fetch_dir

    fetch_dir(store, dataset, tmp_path / "dataset", only=["index.parquet"])
    index = PreparedDataset(tmp_path / "dataset").index
    ids = sorted(index[index["split"].isin(["val", "test"])]["sample_id"])
    assert sorted(predictions.table.index) == ids
    fetch_dir(store, dataset, tmp_path / "dataset", only=sorted(index[index["sample_id"].isin(ids)]["image"]))
    for sample_id in ids:
        image = PreparedDataset(tmp_path / "dataset").image(sample_id)
        expected = (image[..., 1] < LEVELS[0]) | (image[..., 0] < LEVELS[1])
        np.testing.assert_array_equal(predictions.prob(sample_id).levels, np.where(expected, 255, 0))
        row = predictions.table.loc[sample_id]
        assert row["n_seg"] == 2 and row["text"].startswith("Sure, [SEG] and [SEG].")

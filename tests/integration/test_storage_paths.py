"""Paths taken from manifests, object keys and index files never reach outside their folder (issue 21, item 1).

Downloads run against the real SeaweedFS server; the malicious manifests and keys are written straight into it, as
anyone with write access to the bucket could.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from vesselseg.data import DataPrepConfig, PreparedDataset, prepare_dataset
from vesselseg.errors import DataError, StorageError
from vesselseg.model.official.errors import OfficialImportError
from vesselseg.model.official.reader import CheckpointReader
from vesselseg.storage import FileEntry, Manifest, ObjectStore, fetch_dir, publish_dir
from vesselseg.storage.artifact import fetch_raw_prefix
from vesselseg.storage.paths import path_problem


def _published(store: ObjectStore, prefix: str, tmp_path: Path) -> dict:
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(64))
    (src / "nested" / "note.txt").write_text("hello")
    publish_dir(store, src, prefix, kind="test", stage="unit", config={})
    return json.loads(store.get_bytes(f"{prefix}/manifest.json"))


def _plant(store: ObjectStore, prefix: str, manifest: dict, path: str, data: bytes) -> None:
    """A manifest entry `path` and its object `prefix/path`, as a writer to the bucket could plant them."""
    import hashlib

    store.put_bytes(f"{prefix}/{path}", data)
    manifest["files"].append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    store.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest).encode())


@pytest.mark.parametrize(
    ("path", "problem"),
    [("/abs/x", "absolute"), ("a//b", "empty segment"), ("a/./b", "'.'"), ("a/../../b", "'..'"), ("a\0b", "NUL"),
     ("", "empty")],
)  # fmt: skip
def test_unsafe_manifest_paths_are_refused_by_the_model(path: str, problem: str) -> None:
    assert problem in path_problem(path)
    with pytest.raises(ValidationError, match="refused"):
        Manifest(kind="t", stage="s", config={}, files=[FileEntry(path=path, sha256="0" * 64, size=1)],
                 code_version="x", created_at="")  # fmt: skip
    assert path_problem("nested/deeper/file.bin") is None


def test_absolute_manifest_path_is_not_written_outside(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    victim = tmp_path / "outside" / "planted.txt"
    manifest = _published(store, prefix, tmp_path)
    _plant(store, prefix, manifest, str(victim), b"written outside the folder")  # key prefix//tmp/.../planted.txt
    with pytest.raises(StorageError, match=r"manifest\.json.*absolute"):
        fetch_dir(store, store.uri(prefix), tmp_path / "out")
    assert not victim.exists()


def test_dotdot_manifest_path_is_a_clear_error(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    manifest = _published(store, prefix, tmp_path)
    manifest["files"].append({"path": "../escape.txt", "sha256": "0" * 64, "size": 1})
    store.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(StorageError, match=r"manifest\.json.*'\.\.'"):
        fetch_dir(store, store.uri(prefix), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_symlinks_in_the_target_folder_are_not_followed(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    _published(store, prefix, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    # A file name that already points elsewhere: the fetch must not write through it.
    (out / "a.bin").symlink_to(victim)
    with pytest.raises(StorageError, match=r"a\.bin resolves to .*precious\.txt, outside"):
        fetch_dir(store, store.uri(prefix), out, only=["a.bin"])
    assert victim.read_text() == "precious"
    # A sub-folder that is a link out of the target folder.
    (out / "nested").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="outside"):
        fetch_dir(store, store.uri(prefix), out, only=["nested/note.txt"])
    assert not (outside / "note.txt").exists()


class AwsKeyListingFake(ObjectStore):
    """FAKE listing: the real store, plus one key as AWS S3 would list it. SeaweedFS folds `//` into `/` and the minio
    SDK refuses `..` segments, so such keys cannot be planted in the local server; AWS S3 stores both."""

    def __init__(self, store: ObjectStore, extra_key: str) -> None:
        super().__init__(store.settings)
        self.extra_key = extra_key

    def list(self, prefix: str) -> list[str]:
        return sorted([*super().list(prefix), self.extra_key])


@pytest.mark.parametrize("planted", ["//{victim}", "/images/../../outside/planted.txt"], ids=["absolute", "dotdot"])
def test_raw_prefix_keys_are_not_written_outside(store: ObjectStore, prefix: str, tmp_path: Path, planted: str) -> None:
    victim = tmp_path / "outside" / "planted.txt"
    store.put_bytes(f"{prefix}/raw/images/ok.png", b"fine")
    aws = AwsKeyListingFake(store, f"{prefix}/raw" + planted.format(victim=str(victim).lstrip("/")))
    with pytest.raises(StorageError, match="refused: it (is absolute|has an empty segment|has a '..' segment)"):
        fetch_raw_prefix(aws, store.uri(f"{prefix}/raw"), tmp_path / "raw")
    assert not victim.exists()
    assert not (tmp_path / "raw" / "images" / "ok.png").exists(), "keys are all checked before any download"


def test_raw_prefix_download_does_not_follow_a_link_out(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store.put_bytes(f"{prefix}/raw/images/ok.png", b"fine")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "images").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="outside"):
        fetch_raw_prefix(store, store.uri(f"{prefix}/raw"), tmp_path / "raw")
    assert not (outside / "ok.png").exists()


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "dataset"
    prepare_dataset(DataPrepConfig.model_validate({"synthetic": {"count": 4, "size": 64, "seed": 0}}), root)
    return root


def test_dataset_index_paths_stay_inside_the_dataset(dataset_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "dataset"
    shutil.copytree(dataset_root, root)
    index = pd.read_parquet(root / "index.parquet")
    first = index["sample_id"].iloc[0]
    (tmp_path / "secret.png").write_bytes((dataset_root / index["image"].iloc[0]).read_bytes())
    index.loc[0, "image"] = "../secret.png"
    index.to_parquet(root / "index.parquet", index=False)
    dataset = PreparedDataset(root)
    with pytest.raises(DataError, match=r"index\.parquet.*'\.\.'"):
        dataset.image(first)
    index.loc[0, "image"] = str(tmp_path / "secret.png")
    index.to_parquet(root / "index.parquet", index=False)
    with pytest.raises(DataError, match="absolute"):
        PreparedDataset(root).image(first)


def test_weight_index_entries_stay_inside_the_folder(tmp_path: Path) -> None:
    folder, other = tmp_path / "model", tmp_path / "other"
    folder.mkdir()
    other.mkdir()
    save_file({"w": torch.from_numpy(np.zeros(3, np.float32))}, other / "model.safetensors")
    index = {"metadata": {}, "weight_map": {"w": "../other/model.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(OfficialImportError, match=r"model\.safetensors\.index\.json.*'\.\.'"):
        CheckpointReader(folder)

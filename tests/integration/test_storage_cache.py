"""Fetch once: stages on one machine share a cache of artifact files keyed by manifest hash (real SeaweedFS)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from vesselseg.errors import IntegrityError
from vesselseg.stages import baseline, data_prep, evaluate
from vesselseg.storage import InputRef, ObjectStore, fetch_dir, publish_dir
from vesselseg.storage.cache import cache_root
from vesselseg.storage.transfers import LOG_ENV

SMALL = {"synthetic": {"count": 8, "size": 96, "seed": 11}, "split": {"seed": 11}}


def _artifact(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.bin").write_bytes(b"a" * 1000)
    (root / "nested").mkdir()
    (root / "nested" / "b.txt").write_text("bee")
    return root


def _file_downloads(store: ObjectStore, prefix: str) -> dict[str, int]:
    """Downloads of the artifact's files (its manifest, read whole by every reader, is not a file)."""
    return {k: n for k, n in store.transfers.counts.items() if k.startswith(prefix) and not k.endswith("manifest.json")}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VESSELSEG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_publishing_seeds_the_cache(store: ObjectStore, prefix: str, tmp_path: Path, home) -> None:
    ref, _ = publish_dir(store, _artifact(tmp_path / "src"), prefix, kind="test", stage="unit", config={})
    fetch_dir(store, ref, tmp_path / "out")
    assert (tmp_path / "out" / "nested" / "b.txt").read_text() == "bee"
    assert _file_downloads(store, prefix) == {}, "a file published from this machine is not downloaded back"


def _published_elsewhere(store: ObjectStore, prefix: str, tmp_path: Path):
    """An artifact as if published on another machine: nothing of it in this machine's cache."""
    ref, _ = publish_dir(store, _artifact(tmp_path / "src"), prefix, kind="test", stage="unit", config={})
    shutil.rmtree(cache_root())
    return ref


def test_a_second_fetch_of_an_artifact_downloads_nothing(store: ObjectStore, prefix: str, tmp_path: Path, home) -> None:
    ref = _published_elsewhere(store, prefix, tmp_path)
    fetch_dir(store, ref, tmp_path / "first", only=["a.bin"])
    fetch_dir(store, ref, tmp_path / "second")
    fetch_dir(store, store.uri(prefix), tmp_path / "third")  # a bare URI pins the same manifest
    assert _file_downloads(store, prefix) == {f"{prefix}/a.bin": 1, f"{prefix}/nested/b.txt": 1}
    for folder in ("second", "third"):
        assert (tmp_path / folder / "a.bin").read_bytes() == b"a" * 1000
        assert (tmp_path / folder / "nested" / "b.txt").read_text() == "bee"


def test_a_corrupted_cached_file_is_fetched_again(store: ObjectStore, prefix: str, tmp_path: Path, home) -> None:
    ref = _published_elsewhere(store, prefix, tmp_path)
    fetch_dir(store, ref, tmp_path / "first")
    cached = cache_root() / ref.manifest_sha256 / "a.bin"
    assert cached.read_bytes() == b"a" * 1000
    cached.unlink()  # a new file of the right name and size, other bytes: the name alone must not be trusted
    cached.write_bytes(b"b" * 1000)
    fetch_dir(store, ref, tmp_path / "second")
    assert (tmp_path / "second" / "a.bin").read_bytes() == b"a" * 1000
    assert _file_downloads(store, prefix) == {f"{prefix}/a.bin": 2, f"{prefix}/nested/b.txt": 1}
    # Corrupt in the store as well: the bad copy is refused, not served.
    cached.unlink()
    cached.write_bytes(b"c" * 1000)
    store.put_bytes(f"{prefix}/a.bin", b"d" * 1000)
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        fetch_dir(store, ref, tmp_path / "third")
    assert not (tmp_path / "third" / "a.bin").exists()


def _fetch_in_a_process(ref: InputRef, out: Path) -> None:
    fetch_dir(ObjectStore(), ref, out)


def test_stages_fetching_at_once_download_each_file_once(
    store: ObjectStore, prefix: str, tmp_path: Path, home, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):
        (src / f"part{i:02d}.bin").write_bytes(os.urandom(100_000))
    ref, _ = publish_dir(store, src, prefix, kind="test", stage="unit", config={})
    shutil.rmtree(cache_root())
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "transfers.jsonl"))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_fetch_in_a_process, args=(ref, tmp_path / f"out{i}")) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    for i in range(4):
        assert sorted(p.name for p in (tmp_path / f"out{i}").iterdir()) == sorted([*os.listdir(src), "manifest.json"])
        for file in src.iterdir():
            assert (tmp_path / f"out{i}" / file.name).read_bytes() == file.read_bytes()
    lines = [json.loads(line) for line in (tmp_path / "transfers.jsonl").read_text().splitlines()]
    files = Counter(line["key"] for line in lines if line["kind"] == "file")
    assert files == {f"{prefix}/{file.name}": 1 for file in src.iterdir()}
    assert not [p for p in cache_root().rglob("*") if p.name.endswith((".part", ".link"))], "no temporary file left"


@pytest.fixture(scope="module")
def prep(store_settings) -> data_prep.Result:
    return data_prep.run(
        data_prep.Config.model_validate({"data": SMALL, "prefix": "tests/cache/datasets"}), ObjectStore(store_settings)
    )


def test_stages_of_a_run_download_each_dataset_file_once(prep, store_settings, home) -> None:
    store = ObjectStore(store_settings)
    frangi = baseline.run(baseline.Config(dataset=prep.dataset, prefix="tests/cache/predictions"), store)
    config = evaluate.Config(
        dataset=prep.dataset,
        test_labels=prep.test_labels,
        predictions=[frangi.predictions],
        evaluate={"n_boot": 20},
        prefix="tests/cache/evaluations",
    )
    evaluate.run(config, store)
    dataset_prefix = store.key_of(prep.dataset.uri)
    twice = {k: n for k, n in _file_downloads(store, dataset_prefix).items() if n > 1}
    assert _file_downloads(store, dataset_prefix) and not twice, twice


def test_evaluate_downloads_no_image(prep, store_settings, home) -> None:
    store = ObjectStore(store_settings)
    frangi = baseline.run(baseline.Config(dataset=prep.dataset, prefix="tests/cache/predictions"), store)
    dataset_prefix = store.key_of(prep.dataset.uri)
    before = dict(_file_downloads(store, dataset_prefix))
    # A fresh cache, as on another machine: what evaluate downloads is what it asks for.
    shutil.rmtree(cache_root())
    evaluate.run(
        evaluate.Config(
            dataset=prep.dataset,
            test_labels=prep.test_labels,
            predictions=[frangi.predictions],
            evaluate={"n_boot": 20},
            prefix="tests/cache/evaluations",
        ),
        store,
    )
    fetched = {k for k, n in _file_downloads(store, dataset_prefix).items() if n > before.get(k, 0)}
    assert any("/fov/" in k for k in fetched) and any("/masks/" in k for k in fetched)
    assert not [k for k in fetched if "/images/" in k]


def test_test_labels_never_enter_the_cache(store_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a cluster the cache may be a volume every stage mounts (artifact_cache): the test split's ground truth, which
    # only the scoring stages may read, must not land there.
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv("VESSELSEG_CACHE_DIR", str(shared))
    result = data_prep.run(
        data_prep.Config.model_validate({"data": SMALL, "prefix": "tests/cache/datasets"}), ObjectStore(store_settings)
    )
    cached = {folder.name for folder in shared.iterdir() if folder.is_dir()}
    assert result.dataset.manifest_sha256 in cached, "the dataset seeds the cache named by VESSELSEG_CACHE_DIR"
    assert result.test_labels.manifest_sha256 not in cached

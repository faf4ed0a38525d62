"""Object store and artifact integrity against a real SeaweedFS server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vesselseg.errors import IntegrityError, StorageError
from vesselseg.storage import (
    InputRef,
    ObjectStore,
    StoreSettings,
    fetch_dir,
    publish_dir,
    read_manifest,
    server,
    sha256_file,
)


def _artifact(root: Path, n: int = 3, size: int = 1000) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"part{i}.bin").write_bytes(os.urandom(size))
    (root / "nested").mkdir()
    (root / "nested" / "note.txt").write_text("hello")
    return root


def test_multipart_upload_round_trip_verifies_sha(store_settings: StoreSettings, prefix: str, tmp_path: Path) -> None:
    store = ObjectStore(store_settings.model_copy(update={"part_size_mb": 5}))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 << 20))  # three 5 MiB parts
    entry = store.upload_file(big, f"{prefix}/big.bin")
    assert entry.sha256 == sha256_file(big) and entry.size == 12 << 20
    got = store.download_file(f"{prefix}/big.bin", tmp_path / "back.bin", expected=entry)
    assert got.sha256 == entry.sha256
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_publish_then_fetch_reproduces_every_file(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    src = _artifact(tmp_path / "src")
    ref, manifest = publish_dir(store, src, prefix, kind="test", stage="unit", config={"a": 1})
    assert {f.path for f in manifest.files} == {"part0.bin", "part1.bin", "part2.bin", "nested/note.txt"}
    assert store.exists(f"{prefix}/manifest.json")
    out = tmp_path / "out"
    fetched = fetch_dir(store, ref, out)
    assert fetched.config == {"a": 1} and fetched.code_version
    for entry in manifest.files:
        assert (out / entry.path).read_bytes() == (src / entry.path).read_bytes()


def test_corrupted_object_is_detected(
    store: ObjectStore, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VESSELSEG_HOME", str(tmp_path / "publisher"))
    ref, _ = publish_dir(store, _artifact(tmp_path / "src"), prefix, kind="test", stage="unit", config={})
    store.put_bytes(f"{prefix}/part1.bin", b"tampered bytes")
    monkeypatch.setenv("VESSELSEG_HOME", str(tmp_path / "reader"))  # another machine: its cache holds nothing yet
    with pytest.raises(IntegrityError, match=r"part1\.bin.*checksum mismatch|checksum mismatch.*part1\.bin"):
        fetch_dir(store, ref, tmp_path / "out")
    assert not (tmp_path / "out" / "part1.bin").exists()


def test_changed_manifest_is_refused_for_an_old_reference(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    ref, _ = publish_dir(store, _artifact(tmp_path / "a"), prefix, kind="test", stage="unit", config={"v": 1})
    publish_dir(store, _artifact(tmp_path / "b"), prefix, kind="test", stage="unit", config={"v": 2})
    with pytest.raises(StorageError, match="manifest changed"):
        read_manifest(store, ref)


def test_identical_republish_keeps_the_manifest_and_old_references_valid(
    store: ObjectStore, prefix: str, tmp_path: Path
) -> None:
    src = _artifact(tmp_path / "a")
    first, _ = publish_dir(store, src, prefix, kind="test", stage="unit", config={"v": 1}, timings_s={"x": 1.0})
    again, _ = publish_dir(store, src, prefix, kind="test", stage="unit", config={"v": 1}, timings_s={"x": 2.0})
    assert again == first
    read_manifest(store, first)  # a reference taken before the re-run still resolves
    (src / "nested" / "note.txt").write_text("changed")
    changed, manifest = publish_dir(store, src, prefix, kind="test", stage="unit", config={"v": 1})
    assert changed.manifest_sha256 != first.manifest_sha256
    assert manifest.file("nested/note.txt").size == len("changed")
    other_config, _ = publish_dir(store, src, prefix, kind="test", stage="unit", config={"v": 2})
    assert other_config.manifest_sha256 != changed.manifest_sha256


def test_before_visible_sees_the_artifact_before_anyone_else_can(
    store: ObjectStore, prefix: str, tmp_path: Path
) -> None:
    seen: list[tuple[InputRef, bool]] = []

    def record(ref: InputRef) -> None:
        seen.append((ref, store.exists(f"{prefix}/manifest.json")))

    src = _artifact(tmp_path / "a")
    first, _ = publish_dir(store, src, prefix, kind="test", stage="unit", config={}, before_visible=record)
    kept, _ = publish_dir(store, src, prefix, kind="test", stage="unit", config={}, before_visible=record)
    # Called before the manifest exists, with the pointer it then gets; a kept artifact is named all the same.
    assert seen == [(first, False), (kept, True)] and kept == first

    def refuse(ref: InputRef) -> None:
        raise RuntimeError("not recorded")

    (src / "nested" / "note.txt").write_text("changed")
    with pytest.raises(RuntimeError, match="not recorded"):
        publish_dir(store, src, prefix, kind="test", stage="unit", config={}, before_visible=refuse)
    with pytest.raises(StorageError, match="no manifest.json"):
        read_manifest(store, store.uri(prefix))


def test_same_files_from_another_commit_keep_the_manifest_under_its_readers(
    store: ObjectStore, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _artifact(tmp_path / "a")
    monkeypatch.setenv("VESSELSEG_CODE_VERSION", "0.1.0+gaaaaaaaaaaaa")
    first, _ = publish_dir(store, src, prefix, kind="test", stage="unit", config={"v": 1})
    monkeypatch.setenv("VESSELSEG_CODE_VERSION", "0.1.0+gbbbbbbbbbbbb")
    again, kept = publish_dir(store, src, prefix, kind="test", stage="unit", config={"v": 1})
    assert again == first and kept.code_version == "0.1.0+gaaaaaaaaaaaa"
    read_manifest(store, first)  # a run at the first commit that pinned the dataset goes on reading it
    (src / "nested" / "note.txt").write_text("the other commit changed the output")
    changed, manifest = publish_dir(store, src, prefix, kind="test", stage="unit", config={"v": 1})
    assert changed != first and manifest.code_version == "0.1.0+gbbbbbbbbbbbb"


def test_prefix_without_manifest_does_not_exist(store: ObjectStore, prefix: str) -> None:
    store.put_bytes(f"{prefix}/orphan.bin", b"x")
    with pytest.raises(StorageError, match="no manifest.json"):
        read_manifest(store, store.uri(prefix))


def test_republish_removes_stale_files(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    publish_dir(store, _artifact(tmp_path / "a", n=3), prefix, kind="test", stage="unit", config={})
    _, manifest = publish_dir(store, _artifact(tmp_path / "b", n=1), prefix, kind="test", stage="unit", config={})
    assert sorted(store.list(prefix)) == sorted(
        [f"{prefix}/manifest.json"] + [f"{prefix}/{f.path}" for f in manifest.files]
    )


_PUBLISHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from vesselseg.storage import ObjectStore, publish_dir
    publish_dir(ObjectStore(), Path(sys.argv[1]), sys.argv[2], kind="test", stage="killed", config={})
    """
)


@pytest.mark.parametrize("republish", [False, True], ids=["first-publish", "re-publish"])
def test_killed_upload_leaves_no_visible_artifact(
    store_settings: StoreSettings, store: ObjectStore, prefix: str, tmp_path: Path, republish: bool
) -> None:
    if republish:
        publish_dir(store, _artifact(tmp_path / "old", n=2), prefix, kind="test", stage="unit", config={})
        read_manifest(store, store.uri(prefix))
    src = _artifact(tmp_path / "src", n=200, size=128 << 10)
    child = subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, str(src), prefix],
        env={**os.environ, **store_settings.to_env()},
    )
    deadline = time.monotonic() + 60
    # part5.bin is not in the old artifact: once it is there, the new upload is under way.
    while time.monotonic() < deadline and not store.exists(f"{prefix}/part5.bin"):
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, "the upload finished before the kill; the test proves nothing"
    assert store.exists(f"{prefix}/part5.bin")
    with pytest.raises(StorageError, match="no manifest.json"):
        read_manifest(store, store.uri(prefix))


def test_unreachable_endpoint_names_it(tmp_path: Path) -> None:
    settings = StoreSettings(endpoint="127.0.0.1:1", retries=1, backoff_s=0.05)
    with pytest.raises(StorageError, match=r"127\.0\.0\.1:1.*after 2 attempts"):
        ObjectStore(settings).check()


def test_bad_credentials_are_named(store_settings: StoreSettings) -> None:
    bad = store_settings.model_copy(update={"secret_key": "wrong-secret"})
    with pytest.raises(StorageError, match="credentials refused"):
        ObjectStore(bad).check()


def test_missing_bucket_is_named(store_settings: StoreSettings) -> None:
    missing = store_settings.model_copy(update={"bucket": "no-such-bucket-vesselseg"})
    with pytest.raises(StorageError, match="no-such-bucket-vesselseg"):
        ObjectStore(missing).check()


def test_missing_object_is_named(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"no such object.*{prefix}/absent\.bin"):
        store.download_file(f"{prefix}/absent.bin", tmp_path / "x")


def test_copy_prefix_and_list(store: ObjectStore, prefix: str) -> None:
    store.put_bytes(f"{prefix}/src/a", b"1")
    store.put_bytes(f"{prefix}/src/b/c", b"2")
    store.copy_prefix(f"{prefix}/src/", f"{prefix}/dst/")
    assert store.list(f"{prefix}/dst/") == [f"{prefix}/dst/a", f"{prefix}/dst/b/c"]
    assert store.get_bytes(f"{prefix}/dst/b/c") == b"2"


def test_settings_from_environment() -> None:
    settings = StoreSettings.from_env(
        {"VESSELSEG_S3_ENDPOINT": "s3.example:443", "VESSELSEG_S3_SECURE": "true", "AWS_ACCESS_KEY_ID": "ak"}
    )
    assert (settings.endpoint, settings.secure, settings.access_key) == ("s3.example:443", True, "ak")
    assert StoreSettings.from_env(settings.to_env()) == settings


def test_store_up_reuses_a_running_server(store_settings: StoreSettings) -> None:
    before = server.status(store_settings)
    again = server.up(store_settings)
    assert before.up and again.up and again.pid == before.pid


def test_publish_refuses_a_prefix_that_holds_other_artifacts(store: ObjectStore, prefix: str, tmp_path: Path) -> None:
    """`import-official` with `out` one level too high once deleted the two artifacts below it."""
    a, _ = publish_dir(store, _artifact(tmp_path / "a"), f"{prefix}/models/a", kind="model", stage="unit", config={})
    b, _ = publish_dir(store, _artifact(tmp_path / "b"), f"{prefix}/models/b", kind="model", stage="unit", config={})
    before = store.list(f"{prefix}/models/")
    with pytest.raises(StorageError, match=r"refusing to publish to .*/models/: it holds 2 other artifact.*a/manifest"):
        publish_dir(store, _artifact(tmp_path / "c"), f"{prefix}/models", kind="model", stage="unit", config={})
    assert store.list(f"{prefix}/models/") == before
    fetch_dir(store, a, tmp_path / "a-back")
    fetch_dir(store, b, tmp_path / "b-back")


def test_republish_removes_only_what_the_previous_manifest_listed(
    store: ObjectStore, prefix: str, tmp_path: Path
) -> None:
    publish_dir(store, _artifact(tmp_path / "a", n=3), prefix, kind="test", stage="unit", config={})
    store.put_bytes(f"{prefix}/notes/someone-elses.txt", b"not the artifact's")
    _, manifest = publish_dir(store, _artifact(tmp_path / "b", n=1), prefix, kind="test", stage="unit", config={})
    assert sorted(store.list(prefix)) == sorted(
        [f"{prefix}/manifest.json", f"{prefix}/notes/someone-elses.txt"]
        + [f"{prefix}/{f.path}" for f in manifest.files]
    )

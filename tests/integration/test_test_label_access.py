"""The shipped object-store identities enforce what the DAG promises: a real SeaweedFS started here with
manifests/seaweedfs-identities.json (its placeholders filled in) lets the pipeline identity work in `mlpipeline`
but refuses it the test-label bucket, and lets the test-label identity, the one only the scoring tasks mount,
read the labels data-prep published."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from vesselseg.errors import StorageError
from vesselseg.stages import baseline, data_prep, evaluate
from vesselseg.stages.test_labels import LabelStoreSettings, label_store
from vesselseg.storage import ObjectStore, StoreSettings, read_manifest
from vesselseg.storage.server import weed_binary

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "REPLACE_WITH_ACCESS_KEY": "pipelinekey",
    "REPLACE_WITH_SECRET_KEY": "pipelinesecret",
    "REPLACE_WITH_TEST_LABELS_ACCESS_KEY": "labelkey",
    "REPLACE_WITH_TEST_LABELS_SECRET_KEY": "labelsecret",
}
SMALL = {"synthetic": {"count": 8, "size": 96, "seed": 4}, "split": {"seed": 4}}


def _free_base(span: int = 12) -> int:
    """A run of free loopback ports (weed mini opens one per service)."""
    for base in range(43000, 60000, 97):
        try:
            for port in range(base, base + span):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def restricted_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second SeaweedFS with the shipped identities plus an admin (the cluster's own keys); yields its endpoint."""
    root = tmp_path_factory.mktemp("restricted-store")
    text = (ROOT / "manifests" / "seaweedfs-identities.json").read_text()
    for placeholder, value in KEYS.items():
        text = text.replace(placeholder, value)
    config = json.loads(text)
    config["identities"].append(
        {"name": "admin", "credentials": [{"accessKey": "adminkey", "secretKey": "adminsecret"}], "actions": ["Admin"]}
    )
    (root / "s3.json").write_text(json.dumps(config))
    (root / "data").mkdir()
    b = _free_base()
    ports = {
        "master.port": b, "master.port.grpc": b + 1, "volume.port": b + 2, "volume.port.grpc": b + 3,
        "filer.port": b + 4, "filer.port.grpc": b + 5, "s3.port": b + 6, "s3.port.grpc": b + 7,
        "admin.port": b + 8, "admin.port.grpc": b + 9, "debug.port": b + 10,
    }  # fmt: skip
    command = [weed_binary(), "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    command += [f"-{flag}={port}" for flag, port in ports.items()]
    command += ["-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false"]
    command += [f"-s3.config={root / 's3.json'}"]
    with open(root / "weed.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"127.0.0.1:{b + 6}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                for bucket in ("mlpipeline", LabelStoreSettings().bucket):
                    _store(endpoint, "adminkey", "adminsecret", bucket).ensure_bucket()
                break
            except StorageError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(1)
        yield endpoint
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _store(endpoint: str, key: str, secret: str, bucket: str = "mlpipeline") -> ObjectStore:
    return ObjectStore(StoreSettings(endpoint=endpoint, access_key=key, secret_key=secret, bucket=bucket, retries=0))


def test_only_the_test_label_identity_reads_the_test_labels(
    restricted_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = _store(restricted_store, "pipelinekey", "pipelinesecret")
    # data-prep, evaluate and visualize mount the second Secret: these variables are what it sets.
    monkeypatch.setenv("VESSELSEG_TEST_LABELS_ACCESS_KEY", "labelkey")
    monkeypatch.setenv("VESSELSEG_TEST_LABELS_SECRET_KEY", "labelsecret")
    prep = data_prep.run(data_prep.Config.model_validate({"data": SMALL}), pipeline)
    assert read_manifest(label_store(pipeline), prep.test_labels).kind == "test-labels"

    # Every other task holds only the pipeline identity's keys.
    monkeypatch.delenv("VESSELSEG_TEST_LABELS_ACCESS_KEY")
    monkeypatch.delenv("VESSELSEG_TEST_LABELS_SECRET_KEY")
    frangi = baseline.run(baseline.Config(dataset=prep.dataset), pipeline)
    with pytest.raises(StorageError, match="AccessDenied"):
        read_manifest(label_store(pipeline), prep.test_labels)
    with pytest.raises(StorageError, match="AccessDenied"):
        evaluate.run(
            evaluate.Config(dataset=prep.dataset, test_labels=prep.test_labels, predictions=[frangi.predictions]),
            pipeline,
        )
    # ... and the test-label identity opens nothing but its bucket.
    with pytest.raises(StorageError, match="AccessDenied"):
        read_manifest(_store(restricted_store, "labelkey", "labelsecret"), prep.dataset)

    monkeypatch.setenv("VESSELSEG_TEST_LABELS_ACCESS_KEY", "labelkey")
    monkeypatch.setenv("VESSELSEG_TEST_LABELS_SECRET_KEY", "labelsecret")
    scored = evaluate.run(
        evaluate.Config(dataset=prep.dataset, test_labels=prep.test_labels, predictions=[frangi.predictions]), pipeline
    )
    assert all(check.passed for check in scored.summary.honesty)


def test_shipped_secret_and_identities_agree_with_the_cluster_config() -> None:
    from vesselseg.cluster.platform import ClusterConfig

    wiring = ClusterConfig().object_store
    secret = yaml.safe_load((ROOT / "manifests" / "base" / "test-labels-secret.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == wiring.test_labels_secret_name
    assert set(secret["stringData"]) == {wiring.access_key_key, wiring.secret_key_key}
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values()), "only placeholders"
    assert (
        "test-labels-secret.yaml"
        in yaml.safe_load((ROOT / "manifests/base/kustomization.yaml").read_text())["resources"]
    )
    identities = json.loads((ROOT / "manifests" / "seaweedfs-identities.json").read_text())["identities"]
    buckets = {i["name"]: {a.partition(":")[2] for a in i["actions"]} for i in identities}
    # Every action is scoped to one bucket: an unscoped `Read` would open the test labels to every task.
    assert buckets == {"vesselseg": {wiring.bucket}, "vesselseg-test-labels": {wiring.test_labels_bucket}}
    assert LabelStoreSettings().bucket == wiring.test_labels_bucket


def test_one_test_label_key_without_the_other_is_an_error() -> None:
    with pytest.raises(ValueError, match="set both VESSELSEG_TEST_LABELS_ACCESS_KEY and VESSELSEG_TEST_LABELS_SECRET"):
        LabelStoreSettings.from_env({"VESSELSEG_TEST_LABELS_ACCESS_KEY": "labelkey"})
    settings = LabelStoreSettings.from_env({"VESSELSEG_TEST_LABELS_BUCKET": "other-labels"})
    assert (settings.bucket, settings.access_key, settings.secret_key) == ("other-labels", None, None)

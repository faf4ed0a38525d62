"""Task pods run as non-root with scratch on an emptyDir, the store's keys arrive as files, manifests drop
privileges, and a KFP token never crosses a network in clear text unless asked."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from tests.integration.test_cluster_manifests import OVERLAYS, pods_of_training_runtime, render
from tests.integration.test_cluster_platform import ROOT, cluster, executors_by_stage
from vesselseg.cluster.client import KfpError, KfpTarget
from vesselseg.cluster.platform import ClusterConfigError, check_compiled, compile_for_cluster
from vesselseg.config import ConfigError
from vesselseg.storage import StoreSettings


def test_every_task_runs_as_non_root_with_its_scratch_on_an_empty_dir(tmp_path: Path) -> None:
    config = cluster(infer={"scratch_size": "200Gi"})
    tasks = executors_by_stage(compile_for_cluster(ROOT / "pipeline.py", tmp_path / "p.yaml", config))
    assert {"data-prep", "finetune", "convert", "infer", "evaluate"} <= set(tasks)
    for stage, (_, container, k8s) in tasks.items():
        assert k8s["securityContext"] == {"runAsUser": "1000", "runAsGroup": "1000", "runAsNonRoot": True}, stage
        [scratch] = [m for m in k8s["emptyDirMounts"] if m["mountPath"] == "/tmp"]
        assert scratch.get("sizeLimit") == ("200Gi" if stage == "infer" else None), stage
        env = {e["name"] for e in container.get("env", [])}
        assert not {"VESSELSEG_S3_ACCESS_KEY", "VESSELSEG_S3_SECRET_KEY"} & env, stage


def test_a_compiled_pipeline_whose_tasks_may_run_as_root_is_refused(tmp_path: Path) -> None:
    out = compile_for_cluster(ROOT / "pipeline.py", tmp_path / "p.yaml", cluster())
    docs = list(yaml.safe_load_all(out.read_text()))
    for executor in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        executor.pop("securityContext")
    out.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(ClusterConfigError, match="may run as root"):
        check_compiled(out, cluster())
    with pytest.raises(ValueError, match="run_as_user"):
        cluster().model_validate({"pod_security": {"run_as_user": 0}})


def test_store_keys_are_read_from_mounted_files(tmp_path: Path) -> None:
    (tmp_path / "accesskey").write_text("from-file\n")
    (tmp_path / "secretkey").write_text("secret-from-file\n")
    env = {
        "VESSELSEG_S3_ACCESS_KEY_FILE": str(tmp_path / "accesskey"),
        "VESSELSEG_S3_SECRET_KEY_FILE": str(tmp_path / "secretkey"),
    }
    settings = StoreSettings.from_env(env)
    assert (settings.access_key, settings.secret_key) == ("from-file", "secret-from-file")
    assert StoreSettings.from_env({**env, "VESSELSEG_S3_ACCESS_KEY": "explicit"}).access_key == "explicit"
    with pytest.raises(ConfigError, match="VESSELSEG_S3_SECRET_KEY_FILE=.*missing"):
        StoreSettings.from_env({"VESSELSEG_S3_SECRET_KEY_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_manifest_pod_is_non_root_without_privilege_escalation_or_capabilities(overlay: str) -> None:
    pods = []
    for doc in render(overlay):
        if doc["kind"] == "TrainingRuntime":
            pods += [p["spec"] for p in pods_of_training_runtime(doc)]
        elif doc["kind"] == "Job":
            pods.append(doc["spec"]["template"]["spec"])
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize(
    "host", ["http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080", "https://kfp.example.org"]
)
def test_a_token_goes_to_loopback_or_over_tls(host: str) -> None:
    assert KfpTarget(host=host, token="t").bearer() == "t"


def test_a_token_over_plain_http_to_another_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KFP_NAMESPACE", "KF_PIPELINES_SA_TOKEN_PATH", "KFP_ALLOW_PLAIN_HTTP_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KFP_HOST", "http://kfp.example.org")
    monkeypatch.setenv("KFP_TOKEN", "t")
    with pytest.raises(KfpError, match=r"refusing to send a bearer token over plain http:// to http://kfp\.example"):
        KfpTarget.from_env()
    monkeypatch.setenv("KFP_ALLOW_PLAIN_HTTP_TOKEN", "true")
    assert KfpTarget.from_env().bearer() == "t"
    monkeypatch.delenv("KFP_TOKEN")
    monkeypatch.delenv("KFP_ALLOW_PLAIN_HTTP_TOKEN")
    assert KfpTarget.from_env().bearer() is None  # no token, nothing to leak


def test_a_token_to_an_in_cluster_service_is_sent_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        KfpTarget(host="http://ml-pipeline.kubeflow.svc.cluster.local:8888", token_path=Path("/var/run/token"))
    assert "not encrypted" in caplog.text

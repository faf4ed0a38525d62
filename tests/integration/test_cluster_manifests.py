"""Kubernetes manifests: every overlay renders with `kubectl kustomize`, validates against the Kubernetes
schemas, passes yamllint, and agrees with the cluster config and the CLI it drives."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from yamllint import config as yamllint_config
from yamllint import linter

from vesselseg.cluster.client import Schedule
from vesselseg.cluster.commands import add_cluster_commands
from vesselseg.cluster.platform import ClusterConfig

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
K8S_VERSION = "1.32.0"
OVERLAYS = {
    "overlays/standalone": "kubeflow",
    "overlays/multi-user": "kubeflow-user-example-com",
    "recurring-run/standalone": "kubeflow",
    "recurring-run/multi-user": "kubeflow-user-example-com",
}
YAMLLINT = yamllint_config.YamlLintConfig(
    "extends: default\nrules:\n  line-length: {max: 140}\n  document-start: disable\n  truthy: {check-keys: false}\n"
)


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: these tests render with `kubectl kustomize` (Debian: apt-get install kubectl)")
    done = subprocess.run([kubectl, "kustomize", str(MANIFESTS / overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def pods_of_training_runtime(runtime: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": job["name"]},
            "spec": job["template"]["spec"]["template"]["spec"],
        }
        for job in runtime["spec"]["template"]["spec"]["replicatedJobs"]
    ]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_and_every_object_validates(overlay: str) -> None:
    docs = render(overlay)
    assert docs
    for doc in docs:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("namespace") == OVERLAYS[overlay], where
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vesselseg", where
        if doc["apiVersion"].startswith("trainer.kubeflow.org/"):
            assert doc["kind"] == "TrainingRuntime", where
            for pod in pods_of_training_runtime(doc):
                kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        for subject in doc.get("subjects", []):
            assert subject.get("namespace") == OVERLAYS[overlay], (
                f"{where}: subject {subject['name']} in another namespace"
            )
        text = yaml.safe_dump(doc)
        for line in text.splitlines():
            if line.strip().startswith("image:"):
                assert "@sha256:" in line, f"{where}: {line.strip()} is not pinned by digest"


def test_base_objects_agree_with_the_cluster_config_defaults() -> None:
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in render("overlays/standalone")}
    config = ClusterConfig()
    secret = by_kind[("Secret", config.object_store.secret_name)]
    assert set(secret["stringData"]) == {config.object_store.access_key_key, config.object_store.secret_key_key}
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values()), (
        "only placeholders may be committed"
    )
    launcher = by_kind[("ConfigMap", "kfp-launcher")]["data"]
    assert launcher["defaultPipelineRoot"] == config.pipeline_root
    minio = yaml.safe_load(launcher["providers"])["minio"]["default"]
    assert minio["endpoint"] == config.object_store.endpoint and minio["credentials"]["secretRef"]["secretName"]
    pvc = by_kind[("PersistentVolumeClaim", "vesselseg-workspace")]
    assert {p.claim for spec in config.stages.values() for p in spec.pvcs} == {pvc["metadata"]["name"]}
    runtime = by_kind[("TrainingRuntime", config.trainjob.runtime)]
    assert config.trainjob.runtime_kind == "TrainingRuntime"
    assert runtime["spec"]["mlPolicy"]["mpi"]["sshAuthMountPath"] == "/home/vesselseg/.ssh"
    role = by_kind[("Role", "vesselseg-trainjob-launcher")]
    assert {"create", "get", "watch", "delete"} <= set(role["rules"][0]["verbs"]) and role["rules"][0]["resources"] == [
        "trainjobs"
    ]
    multi = {(d["kind"], d["metadata"]["name"]): d for d in render("overlays/multi-user")}
    assert multi[("RoleBinding", "vesselseg-trainjob-launcher")]["subjects"][0]["name"] == "default-editor"
    assert (
        "private-artifacts/kubeflow-user-example-com/"
        in multi[("ConfigMap", "kfp-launcher")]["data"]["defaultPipelineRoot"]
    )


def test_the_example_recurring_run_is_a_valid_schedule_command() -> None:
    [job] = render("recurring-run/standalone")
    container = job["spec"]["template"]["spec"]["containers"][0]
    parser = argparse.ArgumentParser()
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(container["args"])
    assert args.command == "schedule" and Schedule(name=args.schedule_name, cron=args.cron).cron == "0 0 3 * * 1"
    env = {e["name"] for e in container["env"]}
    assert {"KFP_HOST", "KFP_NAMESPACE", "KF_PIPELINES_SA_TOKEN_PATH"} <= env
    [token] = job["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


def test_yaml_files_pass_yamllint() -> None:
    files = sorted(MANIFESTS.rglob("*.yaml"))
    assert len(files) >= 10
    problems = [
        f"{f.relative_to(ROOT)}:{p.line}: {p.desc}" for f in files for p in linter.run(f.read_text(), YAMLLINT, str(f))
    ]
    assert not problems, "\n".join(problems)

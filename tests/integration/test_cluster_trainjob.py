"""A stage as a Kubeflow Trainer TrainJob: the object built from any stage config, and the launch/wait/result path."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from vesselseg.cluster import trainjob
from vesselseg.cluster.platform import ClusterConfig, UnpinnedImageError
from vesselseg.stages import data_prep
from vesselseg.storage import ObjectStore

TRAINJOB_IMAGE = "registry.example/vesselseg-trainjob@sha256:" + "c" * 64


def cluster(**finetune: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(
        {
            "images": {"trainjob": TRAINJOB_IMAGE, "pull_secrets": ["regcred"]},
            "trainjob": {"num_nodes": 3, "poll_s": 0.01},
            "stages": {
                "finetune": {
                    "launcher": "trainjob",
                    "gpus": 8,
                    "node_selector": {"nvidia.com/gpu.product": "H100"},
                    **finetune,
                },
                "data-prep": {"launcher": "trainjob", "gpus": 0, "timeout_s": 60},
            },
        }
    )


def stage_config() -> data_prep.Config:
    """Any stage's pydantic config works; data-prep's stands in for the coming FinetuneConfig."""
    return data_prep.Config.model_validate({"data": {"synthetic": {"count": 6, "size": 64, "seed": 4}}})


def test_trainjob_carries_the_stage_config_resources_scheduling_and_secrets() -> None:
    body = trainjob.build_trainjob("finetune", stage_config(), cluster(), "vesselseg-finetune-1a2b3c4d", "team-a")
    assert body["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and body["kind"] == "TrainJob"
    assert body["metadata"]["namespace"] == "team-a"
    spec = body["spec"]
    assert spec["runtimeRef"] == {
        "name": "vesselseg-deepspeed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
    }
    trainer = spec["trainer"]
    assert trainer["image"] == TRAINJOB_IMAGE and trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    env = {e["name"]: e for e in trainer["env"]}
    assert data_prep.Config.model_validate_json(env["VESSELSEG_STAGE_CONFIG"]["value"]) == stage_config()
    assert env["VESSELSEG_S3_ACCESS_KEY_FILE"]["value"] == "/var/run/secrets/vesselseg/s3/accesskey"
    assert not any("valueFrom" in e for e in trainer["env"])  # the keys are files, not inherited variables
    command = trainer["command"]
    assert command[:3] == ["mpirun", "--np", "24"]
    assert {command[i + 1] for i, arg in enumerate(command) if arg == "-x"} == set(env)
    assert command[-5:] == ["python3", "-m", "vesselseg.cluster.trainjob", "run", "finetune"]
    assert spec["activeDeadlineSeconds"] == cluster().stage("finetune").timeout_s
    [patch] = spec["runtimePatches"]
    jobs = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert [j["name"] for j in jobs] == ["launcher", "node"]
    pod = jobs[0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert {v["name"] for v in pod["volumes"]} == {"s3-keys", "dshm", "pvc-0"}
    assert pod["containers"] == [
        {
            "name": "node",
            "volumeMounts": [
                {"name": "s3-keys", "mountPath": "/var/run/secrets/vesselseg/s3", "readOnly": True},
                {"name": "dshm", "mountPath": "/dev/shm"},
                {"name": "pvc-0", "mountPath": "/workspace"},
            ],
        }
    ]


def test_the_kubernetes_parts_are_valid_pod_fields() -> None:
    """The TrainJob CRD embeds core/v1 types; checked as one Pod against the Kubernetes 1.32 schema."""
    body = trainjob.build_trainjob("finetune", stage_config(), cluster(), "vesselseg-finetune-1a2b3c4d", "team-a")
    trainer = body["spec"]["trainer"]
    patch = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][1]
    pod_patch = patch["template"]["spec"]["template"]["spec"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": body["metadata"]["name"]},
        "spec": {
            "containers": [
                {
                    "name": "node",
                    "image": trainer["image"],
                    "command": trainer["command"],
                    "env": trainer["env"],
                    "resources": trainer["resourcesPerNode"],
                    **pod_patch["containers"][0],
                }
            ],
            **{k: v for k, v in pod_patch.items() if k != "containers"},
        },
    }
    kubernetes_validate.validate(pod, "1.32.0", strict=True)
    assert len(body["metadata"]["name"]) <= 63


def test_names_are_dns_labels_and_unpinned_images_are_refused() -> None:
    name = trainjob.job_name("Fine_Tune" * 10)
    assert len(name) <= 63 and name.replace("-", "").isalnum() and name == name.lower() and name[0].isalpha()
    config = cluster()
    config.images.trainjob = "ghcr.io/vesselseg/vesselseg-trainjob:latest"
    with pytest.raises(UnpinnedImageError, match=r"images\.trainjob"):
        trainjob.build_trainjob("finetune", {}, config, "x", "ns")


class FakeCustomObjects:
    """Stands in for kubernetes.client.CustomObjectsApi: on create, it runs the stage like rank 0 of the job."""

    def __init__(self, store: ObjectStore, monkeypatch: pytest.MonkeyPatch, outcome: str = "Complete") -> None:
        self.store, self.monkeypatch, self.outcome = store, monkeypatch, outcome
        self.created: list[dict[str, Any]] = []
        self.gets = 0

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict
    ) -> dict:
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        self.created.append(body)
        if self.outcome == "Complete":
            for item in body["spec"]["trainer"]["env"]:
                if item["name"] in (trainjob.STAGE_CONFIG_ENV, trainjob.RESULT_KEY_ENV):
                    self.monkeypatch.setenv(item["name"], item["value"])
            self.monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
            trainjob.run_rank(body["spec"]["trainer"]["command"][-1], self.store)
        return body

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> dict:
        self.gets += 1
        if self.gets < 2 or self.outcome == "Running":
            return {"status": {"conditions": [{"type": "Created", "status": "True"}]}}
        return {
            "status": {
                "conditions": [
                    {
                        "type": self.outcome,
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "node-0 exited 1",
                    }
                ]
            }
        }


def test_launch_waits_and_returns_the_result_rank_0_published(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    config = cluster()
    config.trainjob.result_prefix = f"{prefix}/trainjobs"
    config.trainjob.namespace = "team-a"
    api = FakeCustomObjects(store, monkeypatch)
    stage = data_prep.Config.model_validate(
        {"data": {"synthetic": {"count": 6, "size": 64, "seed": 4}}, "prefix": f"{prefix}/datasets"}
    )
    result = data_prep.Result.model_validate(trainjob.launch("data-prep", stage, config, api=api, store=store))
    assert result.dataset.uri.startswith(f"s3://mlpipeline/{prefix}/datasets/")
    assert api.created[0]["metadata"]["name"].startswith("vesselseg-data-prep-")


def test_launch_reports_a_failed_or_stuck_trainjob(store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    config = cluster()
    config.trainjob.namespace = "team-a"
    with pytest.raises(
        trainjob.TrainJobError, match=r"team-a/vesselseg-data-prep-\w+ failed: BackoffLimitExceeded: node-0 exited 1"
    ):
        trainjob.launch(
            "data-prep", stage_config(), config, api=FakeCustomObjects(store, monkeypatch, "Failed"), store=store
        )
    with pytest.raises(trainjob.TrainJobError, match="still running after"):
        trainjob.wait_for(
            FakeCustomObjects(store, monkeypatch, "Running"), "job", "team-a", timeout_s=0.05, poll_s=0.01
        )


def test_a_trainjob_stage_pod_finds_its_cluster_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VESSELSEG_LAUNCHER", raising=False)
    assert trainjob.launcher_from_env() is None
    monkeypatch.setenv("VESSELSEG_LAUNCHER", "trainjob")
    monkeypatch.setenv("VESSELSEG_CLUSTER_CONFIG", cluster().model_dump_json())
    assert trainjob.launcher_from_env() == cluster()
    assert json.loads(cluster().model_dump_json())["trainjob"]["num_nodes"] == 3

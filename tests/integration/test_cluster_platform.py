"""The real pipeline compiled for a cluster: every task in the IR carries what the ClusterConfig asked for."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from kfp import components

from vesselseg.cluster.commands import add_cluster_commands
from vesselseg.cluster.platform import (
    DEFAULT_STAGES,
    ClusterConfig,
    ClusterConfigError,
    PvcMount,
    UnpinnedImageError,
    apply_platform,
    compile_for_cluster,
    load_cluster_config,
    read_ir,
)
from vesselseg.config import ConfigError
from vesselseg.local_run import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
CPU = "registry.example/vesselseg-cpu@sha256:" + "a" * 64
GPU = "registry.example/vesselseg-cuda@sha256:" + "b" * 64
TRAINJOB = "registry.example/vesselseg-trainjob@sha256:" + "c" * 64


def cluster(**stages: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(
        {
            "images": {"cpu": CPU, "gpu": GPU, "trainjob": TRAINJOB, "pull_secrets": ["regcred"]},
            "object_store": {"secret_name": "store-keys", "endpoint": "seaweedfs.kubeflow.svc.cluster.local:8333"},
            "stages": stages,
        }
    )


# One stage made to look like a GPU stage so that every kind of wiring shows up on a real task.
GPU_BASELINE = {
    "image": "gpu",
    "gpus": 2,
    "cpu_limit": "6",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "shm_size": "16Gi",
    "pvcs": [{"claim": "vesselseg-workspace", "mount_path": "/workspace"}],
    "env": {"NCCL_DEBUG": "WARN"},
    "timeout_s": 7200,
    "retry": {"num_retries": 4, "backoff_s": 120, "factor": 3.0, "max_duration_s": 7200},
}


def executors_by_stage(path: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """stage → (task spec in the DAG, executor container, Kubernetes executor config)."""
    spec, platform = read_ir(path)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    found = {}
    for task in spec["root"]["dag"]["tasks"].values():
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        config = k8s[executor]
        stage = config["podMetadata"]["labels"]["vesselseg.io/stage"]
        assert stage not in found, f"two tasks claim stage {stage}"
        found[stage] = (task, spec["deploymentSpec"]["executors"][executor]["container"], config)
    return found


def test_every_task_of_the_real_pipeline_is_wired_as_configured(tmp_path: Path) -> None:
    config = cluster(baseline=GPU_BASELINE, evaluate={"memory_limit": "24Gi", "caching": False})
    out = compile_for_cluster(ROOT / "pipeline.py", tmp_path / "pipeline.yaml", config)
    tasks = executors_by_stage(out)
    spec, _ = read_ir(out)
    assert len(tasks) == len(spec["root"]["dag"]["tasks"]) >= 3
    for stage, (task, container, k8s) in tasks.items():
        want = config.stage(stage)
        assert container["image"] == (GPU if want.image == "gpu" else CPU), stage
        resources = container.get("resources", {})
        for field, key in (
            ("cpu_request", "resourceCpuRequest"),
            ("cpu_limit", "resourceCpuLimit"),
            ("memory_request", "resourceMemoryRequest"),
            ("memory_limit", "resourceMemoryLimit"),
        ):
            assert resources.get(key) == getattr(want, field), (stage, field)
        accelerator = resources.get("accelerator", {})
        assert int(accelerator.get("resourceCount", 0)) == want.gpus, stage
        if want.gpus:
            assert accelerator["resourceType"] == "nvidia.com/gpu"
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert env["VESSELSEG_S3_ENDPOINT"] == "seaweedfs.kubeflow.svc.cluster.local:8333"
        assert env["VESSELSEG_S3_BUCKET"] == "mlpipeline" and env["VESSELSEG_S3_SECURE"] == "false"
        assert all(env[k] == v for k, v in want.env.items()), stage
        secret, *labels = k8s["secretAsVolume"]
        assert secret["secretName"] == "store-keys" and secret["mountPath"] == "/var/run/secrets/vesselseg/s3"
        assert [s["secretName"] for s in labels] == (["vesselseg-s3-test-labels"] if want.test_labels else []), stage
        assert "secretAsEnv" not in k8s
        assert env["VESSELSEG_S3_ACCESS_KEY_FILE"] == "/var/run/secrets/vesselseg/s3/accesskey"
        assert env["VESSELSEG_S3_SECRET_KEY_FILE"] == "/var/run/secrets/vesselseg/s3/secretkey"
        if want.test_labels:
            assert env["VESSELSEG_TEST_LABELS_ACCESS_KEY_FILE"] == "/var/run/secrets/vesselseg/s3-test-labels/accesskey"
        assert int(k8s.get("activeDeadlineSeconds", 0)) == (want.timeout_s or 0), stage
        assert [s["secretName"] for s in k8s["imagePullSecret"]] == ["regcred"]
        assert k8s.get("nodeSelector", {}).get("labels", {}) == want.node_selector, stage
        assert [t["key"] for t in k8s.get("tolerations", [])] == [t.key for t in want.tolerations], stage
        shm = [m for m in k8s.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        assert [(m["medium"], m["sizeLimit"]) for m in shm] == ([("Memory", want.shm_size)] if want.shm_size else []), (
            stage
        )
        assert [m["mountPath"] for m in k8s.get("pvcMount", [])] == [p.mount_path for p in want.pvcs], stage
        retry = task.get("retryPolicy")
        if want.retry is None:
            assert retry is None, stage
        else:
            assert (
                retry["maxRetryCount"] == want.retry.num_retries
                and retry["backoffDuration"] == f"{want.retry.backoff_s}s"
            )
            assert (
                retry["backoffFactor"] == want.retry.factor
                and retry["backoffMaxDuration"] == f"{want.retry.max_duration_s}s"
            )
        assert task.get("cachingOptions", {}).get("enableCache", False) == want.caching, stage
    assert tasks["baseline"][1]["image"] == GPU and tasks["evaluate"][1]["resources"]["resourceMemoryLimit"] == "24Gi"
    # The compiled file loads back as a pipeline with the same interface.
    loaded = components.load_component_from_file(str(out))
    assert loaded.name == "vesselseg" and {"dataset_source", "seed"} <= set(loaded.component_spec.inputs)


def test_a_shared_artifact_cache_is_mounted_by_every_pod_task(tmp_path: Path) -> None:
    config = cluster().model_copy(update={"artifact_cache": PvcMount(claim="vesselseg-cache", mount_path="/cache")})
    tasks = executors_by_stage(compile_for_cluster(ROOT / "pipeline.py", tmp_path / "pipeline.yaml", config))
    for stage, (_, container, k8s) in tasks.items():
        mounted = [m for m in k8s["pvcMount"] if m["mountPath"] == "/cache"]
        assert len(mounted) == 1 and "vesselseg-cache" in json.dumps(mounted[0]), (stage, mounted)
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert env["VESSELSEG_CACHE_DIR"] == "/cache/artifacts", stage
    # Without it, no task names a cache folder: each keeps its own under its emptyDir.
    plain = executors_by_stage(compile_for_cluster(ROOT / "pipeline.py", tmp_path / "plain.yaml", cluster()))
    assert not [
        s for s, (_, c, _) in plain.items() if any(e["name"] == "VESSELSEG_CACHE_DIR" for e in c.get("env", []))
    ]


def test_tag_only_images_are_refused_or_warned_about_loudly(tmp_path: Path) -> None:
    config = cluster()
    config.images.cpu = "ghcr.io/vesselseg/vesselseg-cpu:0.1.0"
    with pytest.raises(UnpinnedImageError, match=r"images\.cpu .*not pinned by digest.*stale cache"):
        compile_for_cluster(ROOT / "pipeline.py", tmp_path / "p.yaml", config)
    config.allow_unpinned_images = True
    with pytest.warns(UserWarning, match="UNPINNED IMAGE"):
        out = compile_for_cluster(ROOT / "pipeline.py", tmp_path / "p.yaml", config)
    assert read_ir(out)[0]["deploymentSpec"]["executors"]["exec-evaluate"]["container"]["image"].endswith(":0.1.0")


def test_a_task_without_apply_platform_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    pipeline = tmp_path / "pipeline.py"
    pipeline.write_text(
        "from kfp import dsl\n"
        "from components import component\n"
        "from vesselseg.cluster.platform import apply_platform\n\n"
        "@dsl.pipeline(name='vesselseg')\n"
        "def vesselseg_pipeline(seed: int = 0):\n"
        "    prep = apply_platform(component('data-prep')(source='synthetic', seed=seed, overrides={}), 'data-prep')\n"
        "    component('baseline')(dataset=prep.outputs['dataset'], overrides={})\n"
    )
    with pytest.raises(ClusterConfigError, match=r"exec-baseline has no cluster wiring.*apply_platform"):
        compile_for_cluster(pipeline, tmp_path / "p.yaml", cluster())


def test_local_compile_carries_no_cluster_settings(tmp_path: Path) -> None:
    spec, platform = read_ir(compile_pipeline(ROOT / "pipeline.py", tmp_path / "local.yaml"))
    assert platform == {}
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "env" not in executor["container"] and "@sha256:" not in executor["container"]["image"]


def test_trainjob_launched_stage_gets_a_small_cpu_pod_that_knows_the_cluster(tmp_path: Path) -> None:
    config = cluster(baseline={**GPU_BASELINE, "launcher": "trainjob"})
    tasks = executors_by_stage(compile_for_cluster(ROOT / "pipeline.py", tmp_path / "p.yaml", config))
    _, container, k8s = tasks["baseline"]
    assert container["image"] == CPU and "accelerator" not in container["resources"]
    assert "tolerations" not in k8s and [m["mountPath"] for m in k8s["emptyDirMounts"]] == ["/tmp"]  # no /dev/shm
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["VESSELSEG_LAUNCHER"] == "trainjob"
    assert ClusterConfig.model_validate_json(env["VESSELSEG_CLUSTER_CONFIG"]) == config


def test_cluster_yaml_loads_and_errors_name_file_and_field(tmp_path: Path) -> None:
    config = load_cluster_config(ROOT / "manifests" / "cluster-config.yaml")
    assert set(DEFAULT_STAGES) <= set(config.stages)
    assert (
        config.stage("finetune").gpus == 8
        and config.stage("finetune").shm_size == DEFAULT_STAGES["finetune"]["shm_size"]
    )
    assert config.stage("finetune").node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    bad = tmp_path / "cluster.yaml"
    bad.write_text(json.dumps({"stages": {"finetune": {"memory_limit": "16GB"}}}))
    with pytest.raises(ConfigError, match=rf"{bad}.*stages\.finetune\.memory_limit.*16GB"):
        load_cluster_config(bad)
    with pytest.raises(ClusterConfigError, match="no cluster settings for stage 'finetnue'.*known stages"):
        cluster().stage("finetnue")


def test_a_new_stage_is_one_table_row(tmp_path: Path) -> None:
    config = cluster(segment_more={"image": "gpu", "gpus": 1})
    assert config.image_for("segment_more") == GPU and config.stage("segment_more").retry is not None

    class Task:
        def set_caching_options(self, enable: bool) -> None:
            self.caching = enable

    assert apply_platform(Task(), "promote").caching is False  # outside a cluster target: caching only


def test_compile_cluster_command_reads_the_cluster_yaml_and_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cluster.yaml"
    args = parser.parse_args(
        [
            "compile-cluster",
            "--cluster",
            str(ROOT / "manifests" / "cluster-config.yaml"),
            "--pipeline",
            str(ROOT / "pipeline.py"),
            "--out",
            str(out),
            "--set",
            f"images.cpu={CPU}",
            "--set",
            f"images.gpu={GPU}",
            "--set",
            f"images.trainjob={TRAINJOB}",
            "--set",
            "stages.evaluate.timeout_s=600",
        ]
    )
    assert args.func(args) == 0 and capsys.readouterr().out.strip() == str(out)
    assert int(executors_by_stage(out)["evaluate"][2]["activeDeadlineSeconds"]) == 600

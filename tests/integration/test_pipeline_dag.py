"""The compiled pipeline: the test split's ground truth reaches only the tasks that score and draw.

Walks the IR the KFP compiler writes (what a cluster runs): which task produces the `test_labels` artifact and
which tasks take it as an input; and, compiled for a cluster, which pods get the keys that open its bucket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vesselseg.cluster.platform import (
    ClusterConfig,
    ClusterConfigError,
    compile_for_cluster,
    label_producers_and_consumers,
    read_ir,
)
from vesselseg.local_run import compile_pipeline

ROOT = Path(__file__).resolve().parents[2]
PINNED = "registry.example/vesselseg@sha256:" + "a" * 64


def _inputs_from(spec: dict, task: str) -> set[tuple[str, str]]:
    """(producer task, output key) of every artifact a task takes as an input."""
    arguments = spec["root"]["dag"]["tasks"][task].get("inputs", {}).get("artifacts", {}).values()
    return {(a["taskOutputArtifact"]["producerTask"], a["taskOutputArtifact"]["outputArtifactKey"]) for a in arguments}


def test_only_evaluate_and_visualize_receive_the_test_labels(tmp_path: Path) -> None:
    spec, _ = read_ir(compile_pipeline(ROOT / "pipeline.py", tmp_path / "pipeline.yaml"))
    producers, consumers = label_producers_and_consumers(spec)
    assert producers == {"data-prep"} and consumers == {"evaluate", "visualize"}
    tasks = set(spec["root"]["dag"]["tasks"])
    assert {"finetune", "convert", "infer", "baseline", "promote"} <= tasks
    for task in tasks - consumers:
        assert ("data-prep", "test_labels") not in _inputs_from(spec, task), task
    # What the others take from data-prep is the dataset alone (images, FOVs, train/val labels).
    for task in ("finetune", "convert", "infer", "baseline", "promote"):
        assert {key for producer, key in _inputs_from(spec, task) if producer == "data-prep"} == {"dataset"}, task


def test_on_a_cluster_only_those_tasks_mount_the_test_label_keys(tmp_path: Path) -> None:
    config = ClusterConfig.model_validate({"images": {"cpu": PINNED, "gpu": PINNED, "trainjob": PINNED}})
    spec, platform = read_ir(compile_for_cluster(ROOT / "pipeline.py", tmp_path / "pipeline.yaml", config))
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounting = set()
    for name, task in spec["root"]["dag"]["tasks"].items():
        executor = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        secrets = {s["secretName"] for s in k8s[executor]["secretAsVolume"]}
        assert "vesselseg-s3" in secrets, name
        if "vesselseg-s3-test-labels" in secrets:
            mounting.add(name)
            env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"][executor]["container"]["env"]}
            assert env["VESSELSEG_TEST_LABELS_BUCKET"] == "vesselseg-test-labels"
    assert mounting == {"data-prep", "evaluate", "visualize"}


def test_giving_the_test_label_keys_to_a_training_task_is_refused(tmp_path: Path) -> None:
    config = ClusterConfig.model_validate(
        {"images": {"cpu": PINNED, "gpu": PINNED, "trainjob": PINNED}, "stages": {"finetune": {"test_labels": True}}}
    )
    with pytest.raises(ClusterConfigError, match=r"task 'finetune' would mount the test-label keys"):
        compile_for_cluster(ROOT / "pipeline.py", tmp_path / "pipeline.yaml", config)

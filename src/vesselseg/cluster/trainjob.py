"""A stage run as a multi-node Kubeflow Trainer `TrainJob` (DeepSpeed runtime), launched from a KFP task.

When a stage's `launcher` is `trainjob` (cluster YAML), its KFP task pod is small and only does this:
build the TrainJob from the stage's own config (a pydantic model or dict, e.g. a FinetuneConfig) and the
cluster settings, create it, wait for `Complete` or `Failed`, and return the stage result that rank 0
wrote to the object store. Inside the TrainJob, `mpirun` (the DeepSpeed runtime is MPI-based: OpenMPI
hostfile, sshd on the nodes) starts `python -m vesselseg.cluster.trainjob run <stage>` on every rank;
`deepspeed.init_distributed()` discovers the ranks from OpenMPI's environment. Written against
Trainer ≥ v2.2 (`runtimePatches`); not yet run on a live cluster.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel

from vesselseg.cluster.platform import PART_OF, ClusterConfig
from vesselseg.errors import VesselsegError
from vesselseg.finetune.launch import log_as_rank, process_rank
from vesselseg.storage import ObjectStore

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
STAGE_CONFIG_ENV = "VESSELSEG_STAGE_CONFIG"
RESULT_KEY_ENV = "VESSELSEG_TRAINJOB_RESULT_KEY"
PATCH_MANAGER = "vesselseg.io/cluster"
# The DeepSpeed runtime's replicated jobs and the container that runs the trainer in both.
REPLICATED_JOBS = ("launcher", "node")
TRAINER_CONTAINER = "node"
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

State = Literal["running", "complete", "failed"]


class TrainJobError(VesselsegError):
    """The TrainJob could not be built, created, or did not complete; the message names job and namespace."""


def job_name(stage: str, suffix: str | None = None) -> str:
    """An RFC 1035 label of at most 63 characters, unique per launch."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"vesselseg-{stage}".lower()).strip("-")
    return f"{base[:50]}-{suffix or uuid.uuid4().hex[:8]}"


def _config_json(stage_config: BaseModel | dict[str, Any]) -> str:
    data = stage_config.model_dump(mode="json") if isinstance(stage_config, BaseModel) else stage_config
    return json.dumps(data, sort_keys=True)


def build_trainjob(
    stage: str, stage_config: BaseModel | dict[str, Any], cluster: ClusterConfig, name: str, namespace: str
) -> dict[str, Any]:
    """The TrainJob object: the trainjob image, the stage's per-node resources, scheduling and secrets."""
    spec = cluster.stage(stage)
    settings = cluster.trainjob
    image = cluster.images.trainjob
    cluster.check_pinned(image, f"images.trainjob (TrainJob of stage {stage!r})")
    store = cluster.object_store
    result_key = f"{settings.result_prefix.strip('/')}/{name}/result.json"
    plain_env = {
        **store.env(),
        **store.secret_file_env(),
        **spec.env,
        STAGE_CONFIG_ENV: _config_json(stage_config),
        RESULT_KEY_ENV: result_key,
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain_env.items()]
    procs = max(spec.gpus, 1)
    forwarded = [arg for item in env for arg in ("-x", item["name"])]
    # OpenMPI passes only the variables named with -x on to the ranks of the other nodes.
    command = [
        "mpirun",
        "--np",
        str(settings.num_nodes * procs),
        "--bind-to",
        "none",
        "--map-by",
        "slot",
        *forwarded,
        "python3",
        "-m",
        "vesselseg.cluster.trainjob",
        "run",
        stage,
    ]
    requests = {k: v for k, v in {"cpu": spec.cpu_request, "memory": spec.memory_request}.items() if v}
    limits = {k: v for k, v in {"cpu": spec.cpu_limit, "memory": spec.memory_limit}.items() if v}
    if spec.gpus:
        requests[spec.accelerator_type] = limits[spec.accelerator_type] = str(spec.gpus)
    # The store's keys as files on every node (mpirun forwards only the variables that name them).
    volumes: list[dict[str, Any]] = [{"name": "s3-keys", "secret": {"secretName": store.secret_name}}]
    mounts: list[dict[str, Any]] = [{"name": "s3-keys", "mountPath": store.secret_mount, "readOnly": True}]
    if spec.shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    for i, pvc in enumerate(spec.pvcs):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": pvc.claim}})
        mounts.append({"name": f"pvc-{i}", "mountPath": pvc.mount_path})
    pod_patch: dict[str, Any] = {}
    if spec.node_selector:
        pod_patch["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_patch["tolerations"] = [
            {
                k: v
                for k, v in {
                    "key": t.key,
                    "operator": t.operator,
                    "value": t.value,
                    "effect": t.effect,
                    "tolerationSeconds": t.toleration_seconds,
                }.items()
                if v is not None
            }
            for t in spec.tolerations
        ]
    pod_patch["volumes"] = volumes
    pod_patch["containers"] = [{"name": TRAINER_CONTAINER, "volumeMounts": mounts}]
    if cluster.images.pull_secrets:
        pod_patch["imagePullSecrets"] = [{"name": s} for s in cluster.images.pull_secrets]
    labels = {"app.kubernetes.io/part-of": PART_OF, "vesselseg.io/stage": stage}
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "runtimeRef": {"name": settings.runtime, "apiGroup": GROUP, "kind": settings.runtime_kind},
            "trainer": {
                "image": image,
                "command": command,
                "env": env,
                "numNodes": settings.num_nodes,
                "numProcPerNode": procs,
                "resourcesPerNode": {"requests": requests, "limits": limits},
            },
        },
    }
    if spec.timeout_s:
        body["spec"]["activeDeadlineSeconds"] = spec.timeout_s
    body["spec"]["runtimePatches"] = [
        {
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {
                "template": {
                    "spec": {
                        "replicatedJobs": [
                            {
                                "name": job,
                                "template": {"spec": {"template": {"metadata": {"labels": labels}, "spec": pod_patch}}},
                            }
                            for job in REPLICATED_JOBS
                        ]
                    }
                }
            },
        }
    ]
    return body


def trainjob_state(obj: dict[str, Any]) -> State:
    """`complete` / `failed` from the TrainJob's status conditions, `running` until one is True."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") == "Complete":
            return "complete"
        if condition.get("status") == "True" and condition.get("type") == "Failed":
            return "failed"
    return "running"


def _failure(obj: dict[str, Any]) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed":
            return f"{condition.get('reason')}: {condition.get('message')}"
    return "no Failed condition"


def wait_for(api: Any, name: str, namespace: str, timeout_s: float, poll_s: float) -> dict[str, Any]:
    """Poll until the TrainJob completes; raise with its failure reason, or on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state = trainjob_state(obj)
        if state == "complete":
            return obj
        if state == "failed":
            raise TrainJobError(f"TrainJob {namespace}/{name} failed: {_failure(obj)}")
        if time.monotonic() > deadline:
            raise TrainJobError(f"TrainJob {namespace}/{name} still running after {timeout_s:.0f}s")
        time.sleep(poll_s)


def launch(
    stage: str,
    stage_config: BaseModel | dict[str, Any],
    cluster: ClusterConfig,
    api: Any = None,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """Create the TrainJob, wait, and return the stage result JSON that rank 0 left in the object store."""
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    namespace = cluster.trainjob.namespace or _own_namespace()
    name = job_name(stage)
    body = build_trainjob(stage, stage_config, cluster, name, namespace)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    log.info(
        "TrainJob %s/%s created (%d nodes, runtime %s)",
        namespace,
        name,
        cluster.trainjob.num_nodes,
        cluster.trainjob.runtime,
    )
    timeout = float(cluster.stage(stage).timeout_s or 7 * 86400)
    wait_for(api, name, namespace, timeout, cluster.trainjob.poll_s)
    store = store or ObjectStore()
    key = f"{cluster.trainjob.result_prefix.strip('/')}/{name}/result.json"
    if not store.exists(key):
        raise TrainJobError(f"TrainJob {namespace}/{name} completed but wrote no result at {store.uri(key)}")
    return json.loads(store.get_bytes(key))


def launcher_from_env() -> ClusterConfig | None:
    """The cluster config a `trainjob` stage's task pod was compiled with, else None (run in-process)."""
    if os.environ.get("VESSELSEG_LAUNCHER") != "trainjob":
        return None
    raw = os.environ.get("VESSELSEG_CLUSTER_CONFIG")
    if not raw:
        raise TrainJobError("VESSELSEG_LAUNCHER=trainjob but VESSELSEG_CLUSTER_CONFIG is empty")
    return ClusterConfig.model_validate_json(raw)


def _own_namespace() -> str:
    try:
        with open(NAMESPACE_FILE) as handle:
            return handle.read().strip()
    except OSError as err:
        raise TrainJobError(f"no TrainJob namespace configured and {NAMESPACE_FILE} unreadable: {err}") from err


def run_rank(stage: str, store: ObjectStore | None = None) -> None:
    """Entry point on every rank: run the stage from its config; rank 0 publishes the result."""
    from vesselseg.stages import stage_module

    module = stage_module(stage)
    raw = os.environ.get(STAGE_CONFIG_ENV)
    if raw is None:
        raise TrainJobError(
            f"{STAGE_CONFIG_ENV} is not set: this entry point runs inside a TrainJob built by build_trainjob"
        )
    result = module.run(module.Config.model_validate_json(raw))
    if process_rank() == 0:
        key = os.environ[RESULT_KEY_ENV]
        (store or ObjectStore()).put_bytes(key, result.model_dump_json(indent=2).encode(), "application/json")
        log.info("rank 0 wrote the %s result to %s", stage, key)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m vesselseg.cluster.trainjob run <stage>", file=sys.stderr)
        return 2
    log_as_rank()
    run_rank(args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

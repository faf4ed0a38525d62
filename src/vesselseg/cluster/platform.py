"""Per-stage cluster wiring, applied to KFP tasks from one `ClusterConfig` (YAML, per-stage table).

`pipeline.py` calls `apply_platform(task, "<stage>")` on every task. Outside `cluster_target(config)`
the call only sets the stage's caching option, so `kfp.local` runs are untouched by cluster settings
(kfp.local has no Kubernetes to give secrets, GPUs or node selectors to). `compile_for_cluster` activates
a config while `pipeline.py` is loaded (KFP builds the graph when the `@dsl.pipeline` decorator runs),
compiles, and then checks the IR: every executor must carry the wiring and an image pinned by digest,
because KFP's cache key includes the image string and a moving tag gives stale cache hits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from vesselseg.config import ConfigError, ConfigModel, load_config
from vesselseg.errors import VesselsegError
from vesselseg.opt_ins import ENV, FIELDS, operator_opt_ins
from vesselseg.storage.settings import CACHE_DIR_ENV, ENV_PREFIX

log = logging.getLogger(__name__)

T = TypeVar("T")

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
QUANTITY = re.compile(r"^\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
# KFP's in-cluster object store since 2.15: the `seaweedfs` Service in `kubeflow`, S3 API on 8333
# (manifests/kustomize/third-party/seaweedfs in kubeflow/pipelines; `minio-service:9000` is an alias).
SEAWEEDFS_ENDPOINT = "seaweedfs.kubeflow.svc.cluster.local:8333"
PART_OF = "vesselseg"
# `vesselseg.stages.test_labels` reads these (the library's cluster layer does not import the stage layer).
TEST_LABELS_ENV_PREFIX = "VESSELSEG_TEST_LABELS_"
TEST_LABELS_OUTPUT = "test_labels"


class ClusterConfigError(VesselsegError, ValueError):
    """The cluster config, or the pipeline compiled with it, would not run as asked; the message says where."""


class UnpinnedImageError(ClusterConfigError):
    """An image reference has no `@sha256:` digest while compiling for a cluster."""


class Toleration(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


class Retry(ConfigModel):
    """KFP retry policy: transient failures (node loss, preemption, store hiccups) get another attempt.

    Safe because every stage is idempotent: it re-publishes its artifact and writes the manifest last.
    """

    model_config = ConfigDict(extra="forbid")

    num_retries: int = Field(2, ge=0)
    backoff_s: int = Field(30, ge=0, description="wait before the first retry")
    factor: float = Field(2.0, ge=1.0, le=10, description="each further wait is this many times longer")
    max_duration_s: int = Field(3600, ge=1, description="stop retrying this long after the first failure")


class PvcMount(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    claim: str = Field(description="PersistentVolumeClaim name in the run's namespace")
    mount_path: str


class StageSpec(ConfigModel):
    """How one stage runs on the cluster."""

    model_config = ConfigDict(extra="forbid")

    image: Literal["cpu", "gpu"] = "cpu"
    cpu_request: str | None = "1"
    cpu_limit: str | None = None
    memory_request: str | None = "2Gi"
    memory_limit: str | None = "4Gi"
    gpus: int = Field(0, ge=0, description="accelerators per pod (limit)")
    accelerator_type: str = Field("nvidia.com/gpu", description="the extended resource name of the accelerator")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    shm_size: str | None = Field(None, description="size of a memory-backed /dev/shm (NCCL, DataLoader workers)")
    pvcs: list[PvcMount] = Field(default_factory=list)
    scratch_size: str | None = Field(
        None, description="size limit of the emptyDir at /tmp, the images' VESSELSEG_HOME; None: the node's disk"
    )
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: int | None = Field(None, ge=1, description="activeDeadlineSeconds of the pod")
    retry: Retry | None = Field(default_factory=Retry)
    caching: bool = True
    test_labels: bool = Field(
        False,
        description="mount the test-label identity's keys: only for stages whose task writes or receives the "
        "test_labels artifact in the DAG (compiling refuses any other)",
    )
    launcher: Literal["pod", "trainjob"] = Field(
        "pod", description="`trainjob`: the task pod only launches and waits for a Kubeflow Trainer TrainJob"
    )

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit", "shm_size", "scratch_size")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None and not QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity like '500m', '4', '16Gi'")
        return value


_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# The built-in per-stage table. A new stage needs one line here (or in the YAML's `stages:`).
DEFAULT_STAGES: dict[str, dict[str, Any]] = {
    "data-prep": {
        "cpu_request": "2",
        "memory_request": "4Gi",
        "memory_limit": "8Gi",
        "timeout_s": 3600,
        "test_labels": True,
    },
    "baseline": {"cpu_request": "2", "memory_request": "4Gi", "memory_limit": "8Gi", "timeout_s": 3600},
    "finetune": {
        "image": "gpu",
        "cpu_request": "16",
        "memory_request": "128Gi",
        "memory_limit": "200Gi",
        "gpus": 8,
        "tolerations": [_GPU_TOLERATION],
        "shm_size": "64Gi",
        "timeout_s": 3 * 86400,
        "pvcs": [{"claim": "vesselseg-workspace", "mount_path": "/workspace"}],
        "env": {"VESSELSEG_HOME": "/workspace/vesselseg"},
        "retry": {"num_retries": 2, "backoff_s": 300, "factor": 2.0, "max_duration_s": 12 * 3600},
    },
    "convert": {
        "cpu_request": "8",
        "memory_request": "96Gi",
        "memory_limit": "160Gi",
        "timeout_s": 6 * 3600,
        "pvcs": [{"claim": "vesselseg-workspace", "mount_path": "/workspace"}],
        "env": {"VESSELSEG_HOME": "/workspace/vesselseg"},
    },
    "infer": {
        "image": "gpu",
        "cpu_request": "8",
        "memory_request": "64Gi",
        "memory_limit": "96Gi",
        "gpus": 4,
        "tolerations": [_GPU_TOLERATION],
        "shm_size": "32Gi",
        "timeout_s": 12 * 3600,
    },
    "evaluate": {
        "cpu_request": "4",
        "memory_request": "8Gi",
        "memory_limit": "16Gi",
        "timeout_s": 3 * 3600,
        "test_labels": True,
    },
    "visualize": {
        "cpu_request": "2",
        "memory_request": "4Gi",
        "memory_limit": "8Gi",
        "timeout_s": 3600,
        "test_labels": True,
    },
    # The gate reads the mutable champion record: never served from cache, never retried blindly.
    "promote": {
        "cpu_request": "500m",
        "memory_request": "1Gi",
        "memory_limit": "2Gi",
        "timeout_s": 900,
        "caching": False,
        "retry": None,
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


class Images(ConfigModel):
    """The project's images; `VESSELSEG_IMAGE_CPU|GPU|TRAINJOB` fill what the YAML leaves out.

    `trainjob` is the CUDA image's `trainjob` target (adds OpenMPI and sshd for Kubeflow Trainer's runtime).
    """

    model_config = ConfigDict(extra="forbid")

    cpu: str = Field(
        default_factory=lambda: os.environ.get("VESSELSEG_IMAGE_CPU", "ghcr.io/vesselseg/vesselseg-cpu:0.1.0")
    )
    gpu: str = Field(
        default_factory=lambda: os.environ.get("VESSELSEG_IMAGE_GPU", "ghcr.io/vesselseg/vesselseg-cuda:0.1.0")
    )
    trainjob: str = Field(
        default_factory=lambda: os.environ.get("VESSELSEG_IMAGE_TRAINJOB", "ghcr.io/vesselseg/vesselseg-trainjob:0.1.0")
    )
    pull_secrets: list[str] = Field(default_factory=list)


class ObjectStoreWiring(ConfigModel):
    """Where task pods find the object store, and the Secret holding its keys (never baked into an image)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str = SEAWEEDFS_ENDPOINT
    bucket: str = "mlpipeline"
    secure: bool = False
    secret_name: str = "vesselseg-s3"
    access_key_key: str = "accesskey"
    secret_key_key: str = "secretkey"
    secret_mount: str = Field(
        "/var/run/secrets/vesselseg/s3", description="where the Secret is mounted as files (not passed as env)"
    )

    def env(self) -> dict[str, str]:
        return {
            ENV_PREFIX + "ENDPOINT": self.endpoint,
            ENV_PREFIX + "BUCKET": self.bucket,
            ENV_PREFIX + "SECURE": str(self.secure).lower(),
        }

    def _key_file_env(self, prefix: str, mount: str) -> dict[str, str]:
        return {
            prefix + "ACCESS_KEY_FILE": f"{mount}/{self.access_key_key}",
            prefix + "SECRET_KEY_FILE": f"{mount}/{self.secret_key_key}",
        }

    def secret_file_env(self) -> dict[str, str]:
        """The variables that point StoreSettings.from_env at the mounted Secret's files."""
        return self._key_file_env(ENV_PREFIX, self.secret_mount)

    # The test split's ground truth lives in its own bucket, readable only with a second identity's keys
    # (manifests/base/test-labels-secret.yaml); the keys above must not open that bucket.
    test_labels_bucket: str = "vesselseg-test-labels"
    test_labels_secret_name: str = "vesselseg-s3-test-labels"
    test_labels_secret_mount: str = Field(
        "/var/run/secrets/vesselseg/s3-test-labels", description="where the test-label keys arrive as files"
    )

    def test_labels_secret_file_env(self) -> dict[str, str]:
        """The variables that point LabelStoreSettings.from_env at the mounted test-label Secret's files."""
        return self._key_file_env(TEST_LABELS_ENV_PREFIX, self.test_labels_secret_mount)


class PodSecurity(ConfigModel):
    """The identity task pods run as: the images' user (uid 1000), never root.

    The SDK has no field for privilege escalation, capabilities or a read-only root (kfp-kubernetes documents
    that KFP's backend sets the first two itself); KFP's launcher writes into the container anyway, so scratch
    goes to an emptyDir at /tmp instead of the image's layer.
    """

    model_config = ConfigDict(extra="forbid")

    run_as_user: int = Field(1000, ge=1, description="uid; 0 (root) is refused")
    run_as_group: int = Field(1000, ge=1)


class TrainJobSettings(ConfigModel):
    """Kubeflow Trainer (≥ v2.2, `trainer.kubeflow.org/v1alpha1`) for stages whose `launcher` is `trainjob`."""

    model_config = ConfigDict(extra="forbid")

    # manifests/base/trainingruntime.yaml: the DeepSpeed (MPI) runtime adapted to the project's image and user.
    runtime: str = "vesselseg-deepspeed"
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "TrainingRuntime"
    num_nodes: int = Field(2, ge=1)
    namespace: str | None = Field(None, description="default: the namespace of the task pod that launches it")
    poll_s: float = Field(30.0, gt=0, le=3600)
    result_prefix: str = Field("vesselseg/trainjobs", description="rank 0 writes <prefix>/<job>/result.json")


class OptIns(ConfigModel):
    """Operator opt-ins compiled into the pipeline (SECURITY.md); unset here, the compiling environment's
    VESSELSEG_TRUST_* decide. Run parameters cannot change them."""

    model_config = ConfigDict(extra="forbid")

    trust_remote_code: bool = Field(
        default_factory=lambda: operator_opt_ins()["trust_remote_code"],
        description="infer may load a model folder that ships its own Python code",
    )
    trust_pickle: bool = Field(
        default_factory=lambda: operator_opt_ins()["trust_pickle"],
        description="convert may unpickle a checkpoint that holds Python objects",
    )


class ClusterConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    images: Images = Field(default_factory=Images)
    allow_unpinned_images: bool = Field(
        False, description="compile with tag-only images after a loud warning (dev clusters only: stale cache hits)"
    )
    object_store: ObjectStoreWiring = Field(default_factory=ObjectStoreWiring)
    pipeline_root: str = Field("minio://mlpipeline/v2/artifacts", description="what kfp-launcher's ConfigMap says")
    trainjob: TrainJobSettings = Field(default_factory=TrainJobSettings)
    opt_ins: OptIns = Field(default_factory=OptIns)
    pod_security: PodSecurity = Field(default_factory=PodSecurity)
    artifact_cache: PvcMount | None = Field(
        None,
        description="a PersistentVolumeClaim that every task mounts for the artifact cache (VESSELSEG_CACHE_DIR), so "
        "that each artifact file is downloaded once per volume rather than once per task; ReadWriteMany where tasks "
        "run on several nodes; None: each task's cache is its own emptyDir",
    )
    stages: dict[str, StageSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _stage_table(cls, data: Any) -> Any:
        """The YAML's `stages:` entries are merged key by key onto the built-in table."""
        if not isinstance(data, dict):
            return data
        given = data.get("stages") or {}
        if not isinstance(given, dict):
            raise ValueError("stages must be a mapping of stage name to settings")
        table = {name: dict(spec) for name, spec in DEFAULT_STAGES.items()}
        for name, spec in given.items():
            if isinstance(spec, StageSpec):
                spec = spec.model_dump()
            table[name] = _merge(table.get(name, {}), spec or {})
        return {**data, "stages": table}

    def stage(self, name: str) -> StageSpec:
        try:
            return self.stages[name]
        except KeyError:
            raise ClusterConfigError(
                f"no cluster settings for stage {name!r}; known stages: {', '.join(sorted(self.stages))} "
                "(add a row to DEFAULT_STAGES in vesselseg/cluster/platform.py or to `stages:` in the cluster YAML)"
            ) from None

    def image_for(self, stage: str) -> str:
        spec = self.stage(stage)
        # The pod of a TrainJob-launched stage only waits; the GPUs belong to the TrainJob.
        kind = "cpu" if spec.launcher == "trainjob" else spec.image
        image = getattr(self.images, kind)
        self.check_pinned(image, f"images.{kind} (stage {stage!r})")
        return image

    def check_pinned(self, image: str, where: str) -> None:
        if DIGEST.search(image):
            return
        message = (
            f"{where}: image {image!r} is not pinned by digest (@sha256:…). KFP's cache key includes the image "
            "string, so a moving tag gives stale cache hits; build with `make images` and set the digest "
            "printed there (cluster YAML `images:` or VESSELSEG_IMAGE_CPU / VESSELSEG_IMAGE_GPU)"
        )
        if not self.allow_unpinned_images:
            raise UnpinnedImageError(message)
        warnings.warn("UNPINNED IMAGE: " + message, stacklevel=3)
        log.warning("UNPINNED IMAGE: %s", message)


def load_cluster_config(path: Path | None = None, overrides: list[str] | None = None) -> ClusterConfig:
    """The cluster YAML (`manifests/cluster-config.yaml`) plus `--set` overrides; errors name the file and key."""
    return load_config(ClusterConfig, path, overrides)


_ACTIVE: ContextVar[ClusterConfig | None] = ContextVar("vesselseg_cluster_config", default=None)


@contextlib.contextmanager
def cluster_target(config: ClusterConfig) -> Iterator[ClusterConfig]:
    """While active, `apply_platform` wires tasks for this cluster."""
    token = _ACTIVE.set(config)
    try:
        yield config
    finally:
        _ACTIVE.reset(token)


def apply_platform(task: T, stage: str) -> T:
    """Give `task` the cluster settings of `stage`; returns the task so calls chain."""
    from kfp import kubernetes

    config = _ACTIVE.get()
    if config is None:
        # A local compile or run: only caching applies, and a stage without a row of cluster settings keeps the
        # default (a new stage runs locally before it is given a row; compiling for a cluster asks for one).
        task.set_caching_options(ClusterConfig().stages.get(stage, StageSpec()).caching)  # type: ignore[attr-defined]
        return task
    spec = config.stage(stage)
    task.set_caching_options(spec.caching)  # type: ignore[attr-defined]
    task.set_container_image(config.image_for(stage))  # type: ignore[attr-defined]
    if spec.launcher == "trainjob":
        _wire_trainjob_launcher(task, stage, config)
    else:
        _wire_resources(task, spec)
        for key, value in spec.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for tol in spec.tolerations:
            kubernetes.add_toleration(
                task,
                key=tol.key,
                operator=tol.operator,
                value=tol.value,
                effect=tol.effect,
                toleration_seconds=tol.toleration_seconds,
            )
        if spec.shm_size:
            kubernetes.empty_dir_mount(
                task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=spec.shm_size
            )
        for pvc in [*spec.pvcs, *([config.artifact_cache] if config.artifact_cache else [])]:
            kubernetes.mount_pvc(task, pvc_name=pvc.claim, mount_path=pvc.mount_path)
    opt_ins = {ENV[name]: str(getattr(config.opt_ins, name)).lower() for name in FIELDS.get(stage, {})}
    store = config.object_store
    cache = (
        {CACHE_DIR_ENV: f"{config.artifact_cache.mount_path.rstrip('/')}/artifacts"}
        if config.artifact_cache and spec.launcher == "pod"
        else {}
    )
    for name, value in {**store.env(), **store.secret_file_env(), **spec.env, **opt_ins, **cache}.items():
        task.set_env_variable(name, value)  # type: ignore[attr-defined]
    kubernetes.use_secret_as_volume(task, secret_name=store.secret_name, mount_path=store.secret_mount)
    kubernetes.set_security_context(
        task,
        run_as_user=config.pod_security.run_as_user,
        run_as_group=config.pod_security.run_as_group,
        run_as_non_root=True,
    )
    if spec.test_labels:
        task.set_env_variable(TEST_LABELS_ENV_PREFIX + "BUCKET", store.test_labels_bucket)  # type: ignore[attr-defined]
        for name, value in store.test_labels_secret_file_env().items():
            task.set_env_variable(name, value)  # type: ignore[attr-defined]
        kubernetes.use_secret_as_volume(
            task, secret_name=store.test_labels_secret_name, mount_path=store.test_labels_secret_mount
        )
    kubernetes.empty_dir_mount(task, volume_name="scratch", mount_path="/tmp", size_limit=spec.scratch_size)
    if config.images.pull_secrets:
        kubernetes.set_image_pull_secrets(task, config.images.pull_secrets)
    kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", PART_OF)
    kubernetes.add_pod_label(task, "vesselseg.io/stage", stage)
    if spec.timeout_s:
        kubernetes.set_timeout(task, spec.timeout_s)
    if spec.retry is not None:
        task.set_retry(  # type: ignore[attr-defined]
            num_retries=spec.retry.num_retries,
            backoff_duration=f"{spec.retry.backoff_s}s",
            backoff_factor=spec.retry.factor,
            backoff_max_duration=f"{spec.retry.max_duration_s}s",
        )
    return task


def _wire_resources(task: Any, spec: StageSpec) -> None:
    if spec.cpu_request:
        task.set_cpu_request(spec.cpu_request)
    if spec.cpu_limit:
        task.set_cpu_limit(spec.cpu_limit)
    if spec.memory_request:
        task.set_memory_request(spec.memory_request)
    if spec.memory_limit:
        task.set_memory_limit(spec.memory_limit)
    if spec.gpus:
        task.set_accelerator_type(spec.accelerator_type).set_accelerator_limit(spec.gpus)


def _wire_trainjob_launcher(task: Any, stage: str, config: ClusterConfig) -> None:
    """A small pod that creates the TrainJob and waits; the stage's resources go to the TrainJob."""
    config.check_pinned(config.images.trainjob, f"images.trainjob (TrainJob of stage {stage!r})")
    task.set_cpu_request("500m").set_memory_request("1Gi").set_memory_limit("2Gi")
    task.set_env_variable("VESSELSEG_LAUNCHER", "trainjob")
    task.set_env_variable("VESSELSEG_CLUSTER_CONFIG", config.model_dump_json())


def compile_for_cluster(pipeline_file: Path, out: Path, config: ClusterConfig) -> Path:
    """Compile `pipeline_file` with `config` applied, then refuse an IR that would not run as configured."""
    from kfp import compiler

    from vesselseg.local_run import load_pipeline

    with cluster_target(config):
        pipeline = load_pipeline(pipeline_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    check_compiled(out, config)
    return out


def read_ir(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and the Kubernetes platform spec (`{}` if none) of a compiled YAML."""
    docs = list(yaml.safe_load_all(Path(path).read_text()))
    if not docs or not isinstance(docs[0], dict) or "deploymentSpec" not in docs[0]:
        raise ConfigError(f"{path} is not a compiled KFP pipeline (no deploymentSpec)")
    platform = docs[1] if len(docs) > 1 and isinstance(docs[1], dict) else {}
    return docs[0], platform


def check_compiled(path: Path, config: ClusterConfig) -> None:
    """Every executor has a pinned image, the object-store wiring and a non-root identity (`apply_platform`)."""
    spec, platform = read_ir(path)
    k8s = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    problems = []
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor.get("container")
        if container is None:
            continue
        try:
            config.check_pinned(container["image"], f"{path}: executor {name}")
        except UnpinnedImageError as err:
            problems.append(str(err))
        wiring = k8s.get(name, {})
        secrets = {s.get("secretName") for s in wiring.get("secretAsVolume", [])}
        if config.object_store.secret_name not in secrets:
            problems.append(
                f"{path}: executor {name} has no cluster wiring "
                f"(no Secret {config.object_store.secret_name!r} mounted as files): "
                "call apply_platform(task, '<stage>') on its task in pipeline.py"
            )
        if wiring.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{path}: executor {name} may run as root (no securityContext.runAsNonRoot)")
    problems += _label_secret_problems(spec, k8s, config)
    if problems:
        raise ClusterConfigError("; ".join(problems))


def label_producers_and_consumers(spec: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(tasks whose component outputs `test_labels`, tasks that take such an output as an input) in the DAG."""
    tasks = spec["root"]["dag"]["tasks"]
    producers = {
        name
        for name, task in tasks.items()
        if TEST_LABELS_OUTPUT
        in spec["components"][task["componentRef"]["name"]].get("outputDefinitions", {}).get("artifacts", {})
    }
    consumers = {
        name
        for name, task in tasks.items()
        for argument in task.get("inputs", {}).get("artifacts", {}).values()
        if argument.get("taskOutputArtifact", {}).get("producerTask") in producers
        and argument["taskOutputArtifact"].get("outputArtifactKey") == TEST_LABELS_OUTPUT
    }
    return producers, consumers


def _label_secret_problems(spec: dict[str, Any], k8s: dict[str, Any], config: ClusterConfig) -> list[str]:
    """The test-label keys go only to tasks that write or receive the test labels in the DAG."""
    producers, consumers = label_producers_and_consumers(spec)
    problems = []
    for name, task in spec["root"]["dag"]["tasks"].items():
        executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        wiring = k8s.get(executor, {})
        secrets = {s.get("secretName") for s in wiring.get("secretAsEnv", []) + wiring.get("secretAsVolume", [])}
        if config.object_store.test_labels_secret_name in secrets and name not in producers | consumers:
            problems.append(
                f"task {name!r} would mount the test-label keys (Secret "
                f"{config.object_store.test_labels_secret_name!r}) but neither writes nor receives the test_labels "
                "artifact: set its stage's test_labels to false"
            )
    return problems

"""Run or compile the pipeline defined in `pipeline.py`.

`run_local` drives the real KFP DAG against the embedded object store, with KFP's local cache on so that an
unchanged stage is skipped on a re-run: through `kfp.local.SubprocessRunner` in this interpreter (the default), or
through `kfp.local.DockerRunner`, one container per task from the project's images (vesselseg.container_runner).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal

from vesselseg.config import ConfigError, apply_overrides
from vesselseg.opt_ins import ENV
from vesselseg.run_parameters import check_run_parameters
from vesselseg.storage import server
from vesselseg.storage.settings import StoreSettings, work_dir

Runner = Literal["subprocess", "docker"]

log = logging.getLogger(__name__)


def load_pipeline(pipeline_file: Path) -> Callable[..., Any]:
    pipeline_file = pipeline_file.resolve()
    if not pipeline_file.exists():
        raise ConfigError(f"pipeline file {pipeline_file} does not exist (run from the project root)")
    # `pipeline.py` imports `components`, which lives beside it; they are imported afresh because their images
    # come from the environment at import time.
    sys.path.insert(0, str(pipeline_file.parent))
    for name in [name for name in sys.modules if name == "components" or name.startswith("components.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location("vesselseg_pipeline_module", pipeline_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "vesselseg_pipeline"):
        raise ConfigError(f"{pipeline_file} defines no `vesselseg_pipeline`")
    return module.vesselseg_pipeline


def compile_pipeline(pipeline_file: Path, out: Path, params: dict[str, Any] | None = None) -> Path:
    """Compile the pipeline, `params` becoming its parameters' defaults: run parameters like any other, checked
    before kfp or the pipeline is imported."""
    params = params or {}
    check_run_parameters(params)
    from kfp import compiler

    pipeline = load_pipeline(pipeline_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out), pipeline_parameters=_parameters(pipeline, params))
    return out


def source_fingerprint(pipeline_file: Path) -> str:
    """A hash of the library, the components and the pipeline file: what a local task's output depends on."""
    import vesselseg

    roots = [Path(vesselseg.__file__).parent, pipeline_file.resolve().parent / "components"]
    files = sorted(p for root in roots for p in root.rglob("*.py")) + [pipeline_file.resolve()]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _parameters(pipeline: Any, params: dict[str, Any]) -> dict[str, Any]:
    known = set(pipeline.component_spec.inputs or {})
    if unknown := sorted(set(params) - known):
        raise ConfigError(f"pipeline has no parameter {unknown[0]!r}; parameters: {', '.join(sorted(known))}")
    return params


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_local(
    pipeline_file: Path,
    overrides: list[str],
    out_dir: Path,
    cache: bool = True,
    runner: Runner = "subprocess",
    image_cpu: str | None = None,
    image_gpu: str | None = None,
) -> dict[str, Any]:
    """Run the DAG; returns the run record also written to <out_dir>/latest/run.json. With `runner="docker"` the
    record names the image of each task's container; `image_cpu`/`image_gpu` override build/images.env."""
    # Before the store, the images or the pipeline are touched: a typo fails now, not after fine-tuning.
    params = apply_overrides({}, overrides)
    check_run_parameters(params)
    from kfp import local

    from vesselseg import container_runner

    images = None
    if runner == "docker":
        client = container_runner.docker_client()
        images = container_runner.resolve_images(client, pipeline_file.resolve().parent, image_cpu, image_gpu)
        client.close()
    store = server.up()
    log.info("object store: %s", store.endpoint)
    image_env = {"VESSELSEG_IMAGE_CPU": images.cpu.id, "VESSELSEG_IMAGE_GPU": images.gpu.id} if images else {}
    with _environ(image_env):
        pipeline = load_pipeline(pipeline_file)
    params = _parameters(pipeline, params)
    pipeline_root = work_dir() / ("kfp-docker" if images else "kfp")
    if images:
        pipeline_root.mkdir(parents=True, exist_ok=True)
        # Like /tmp: the containers' non-root user makes its own run folders here.
        pipeline_root.chmod(0o1777)
        task_runner: Any = local.DockerRunner(network_mode="host", shm_size="1g")
    else:
        task_runner = local.SubprocessRunner(use_venv=False)
    local.init(
        runner=task_runner,
        pipeline_root=str(pipeline_root),
        enable_caching=cache,
        # On a cluster the image digest in the cache key changes with the code; locally the source does.
        cache_root=str(pipeline_root / ".kfp_cache" / source_fingerprint(pipeline_file)),
    )
    run_dir = out_dir.resolve() / "latest"
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "runner": runner,
        "images": images.model_dump() if images else None,
        "parameters": params,
        "pipeline_root": str(pipeline_root),
        "object_store": store.endpoint,
    }
    # Containers inherit nothing: they get the store's settings and the operator's opt-ins (run-local's flags).
    task_env = StoreSettings.from_env().to_env() | {
        name: os.environ[name] for name in ENV.values() if name in os.environ
    }
    recording = container_runner.recording_containers(task_env) if images else nullcontext([])
    started = time.perf_counter()
    with recording as containers:
        try:
            task = pipeline(**params)
        except RuntimeError as err:
            if not images:
                raise
            record.update(status="failed", error=str(err), containers=[c.model_dump() for c in containers])
            (run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))
            raise container_runner.ContainerError(
                f"{err}: the failed task's container log is above; run record {run_dir / 'run.json'}"
            ) from None
    elapsed = time.perf_counter() - started
    from vesselseg.evaluate.evaluate import EvaluationSummary
    from vesselseg.evaluate.table import format_table

    summary = EvaluationSummary.model_validate_json(Path(task.outputs["summary"].path).read_text())
    (run_dir / "summary.json").write_text(summary.model_dump_json(indent=2))
    report = run_dir / "report.html"
    shutil.copyfile(task.outputs["html"].path, report)
    record.update(
        status="succeeded",
        summary_artifact=task.outputs["summary"].path,
        wall_s=round(elapsed, 1),
        containers=[c.model_dump() for c in containers],
    )
    (run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))
    print()
    print(format_table(summary))
    print()
    print(f"pipeline finished in {elapsed:.1f}s ({runner} runner); KFP task outputs under {pipeline_root}")
    if images:
        print(f"tasks ran in containers of {images.cpu.ref} ({images.cpu.id[:19]}); see {run_dir / 'run.json'}")
    print(f"artifacts in the object store at {store.endpoint} (see each manifest.json)")
    print(f"summary: {run_dir / 'summary.json'}")
    print(f"report: {report}")
    return record

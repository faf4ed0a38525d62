"""Run or compile the pipeline defined in `pipeline.py`.

`run_local` drives the real KFP DAG with `kfp.local.SubprocessRunner` against the embedded object
store, with KFP's local cache on so that an unchanged stage is skipped on a re-run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vesselseg.config import ConfigError, apply_overrides
from vesselseg.evaluation.evaluate import EvaluationSummary
from vesselseg.evaluation.table import format_table
from vesselseg.opt_ins import refuse_in_parameters
from vesselseg.storage import server
from vesselseg.storage.settings import work_dir

log = logging.getLogger(__name__)


def load_pipeline(pipeline_file: Path) -> Callable[..., Any]:
    pipeline_file = pipeline_file.resolve()
    if not pipeline_file.exists():
        raise ConfigError(f"pipeline file {pipeline_file} does not exist (run from the project root)")
    # `pipeline.py` imports `components`, which lives beside it.
    sys.path.insert(0, str(pipeline_file.parent))
    spec = importlib.util.spec_from_file_location("vesselseg_pipeline_module", pipeline_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "vesselseg_pipeline"):
        raise ConfigError(f"{pipeline_file} defines no `vesselseg_pipeline`")
    return module.vesselseg_pipeline


def compile_pipeline(pipeline_file: Path, out: Path) -> Path:
    from kfp import compiler

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(load_pipeline(pipeline_file), str(out))
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


def _parameters(pipeline: Any, overrides: list[str]) -> dict[str, Any]:
    params = apply_overrides({}, overrides)
    known = set(pipeline.component_spec.inputs or {})
    if unknown := sorted(set(params) - known):
        raise ConfigError(f"pipeline has no parameter {unknown[0]!r}; parameters: {', '.join(sorted(known))}")
    for name, value in params.items():
        refuse_in_parameters(name, value)
    return params


def run_local(pipeline_file: Path, overrides: list[str], out_dir: Path, cache: bool = True) -> dict[str, Any]:
    from kfp import local

    store = server.up()
    log.info("object store: %s", store.endpoint)
    pipeline = load_pipeline(pipeline_file)
    params = _parameters(pipeline, overrides)
    pipeline_root = work_dir() / "kfp"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=cache,
        # On a cluster the image digest in the cache key changes with the code; locally the source does.
        cache_root=str(pipeline_root / ".kfp_cache" / source_fingerprint(pipeline_file)),
    )
    started = time.perf_counter()
    task = pipeline(**params)
    elapsed = time.perf_counter() - started
    run_dir = out_dir.resolve() / "latest"
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = EvaluationSummary.model_validate_json(Path(task.outputs["summary"].path).read_text())
    (run_dir / "summary.json").write_text(summary.model_dump_json(indent=2))
    report = run_dir / "report.html"
    shutil.copyfile(task.outputs["html"].path, report)
    record = {
        "parameters": params,
        "summary_artifact": task.outputs["summary"].path,
        "wall_s": round(elapsed, 1),
        "pipeline_root": str(pipeline_root),
        "object_store": store.endpoint,
    }
    (run_dir / "run.json").write_text(json.dumps(record, indent=2, default=str))
    print()
    print(format_table(summary))
    print()
    print(f"pipeline finished in {elapsed:.1f}s; KFP task outputs under {pipeline_root}")
    print(f"artifacts in the object store at {store.endpoint} (see each manifest.json)")
    print(f"summary: {run_dir / 'summary.json'}")
    print(f"report: {report}")
    return record

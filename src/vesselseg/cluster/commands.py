"""`vesselseg compile-cluster | upload | submit | schedule`: the cluster side of the command line.

`vesselseg.cli` registers these with `add_cluster_commands(sub)`. Host and auth come from `--host` /
`--namespace` or `KFP_HOST`, `KFP_NAMESPACE`, `KFP_TOKEN`, `KF_PIPELINES_SA_TOKEN_PATH`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from vesselseg.cluster.client import KfpError, KfpSession, KfpTarget, Schedule, version_name
from vesselseg.config import apply_overrides
from vesselseg.recipes import add_recipe_option, with_recipe
from vesselseg.run_parameters import check_run_parameters

DEFAULT_PIPELINE = "vesselseg"
DEFAULT_EXPERIMENT = "vesselseg"


def _params(overrides: list[str]) -> dict[str, Any]:
    """`--set seed=3 --set data_prep_overrides.data.synthetic.count=8` → nested pipeline parameters, each stage's
    overrides checked against its config before the server is asked anything."""
    params = apply_overrides({}, overrides)
    check_run_parameters(params)
    return params


def _session(args: argparse.Namespace) -> KfpSession:
    return KfpSession(KfpTarget.from_env(host=args.host, namespace=args.namespace), poll_s=args.poll_s)


def _compile_cluster(args: argparse.Namespace) -> int:
    from vesselseg.cluster.platform import compile_for_cluster, load_cluster_config

    config = load_cluster_config(args.cluster, args.set)
    print(compile_for_cluster(args.pipeline, args.out, config))
    return 0


def _upload(args: argparse.Namespace) -> int:
    from vesselseg.storage.artifact import code_version

    result = _session(args).upload(
        args.package, args.name, args.version or version_name(code_version()), args.description
    )
    print(result.model_dump_json(indent=2))
    return 0


def _submit(args: argparse.Namespace) -> int:
    params = _params(with_recipe(args.recipe, args.set))
    session = _session(args)
    run_name = args.run_name or f"{args.name} {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S}"
    run_id = session.submit(
        args.experiment,
        run_name,
        params,
        pipeline_name=None if args.package else args.name,
        version_id=args.version_id,
        package=args.package,
        service_account=args.service_account,
    )
    record: dict[str, Any] = {"run_id": run_id, "host": session.target.host}
    if args.wait:
        outcome = session.wait(run_id, args.timeout_s)
        record.update(outcome.model_dump())
        print(json.dumps(record, indent=2))
        return 0 if outcome.succeeded else 1
    print(json.dumps(record, indent=2))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    params = _params(with_recipe(args.recipe, args.set))
    try:
        schedule = Schedule(name=args.schedule_name, cron=args.cron)
    except ValueError as err:
        raise KfpError(f"--cron: {err}") from err
    recurring_id = _session(args).schedule(
        schedule,
        args.experiment,
        args.name,
        params,
        version_id=args.version_id,
        replace=args.replace,
        service_account=args.service_account,
    )
    print(json.dumps({"recurring_run_id": recurring_id, **schedule.model_dump()}, indent=2))
    return 0


def _host_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="KFP API URL (default: $KFP_HOST)")
    parser.add_argument("--namespace", help="profile namespace on multi-user installs (default: $KFP_NAMESPACE)")
    parser.add_argument("--poll-s", type=float, default=5.0, help=argparse.SUPPRESS)


def add_cluster_commands(sub: argparse._SubParsersAction) -> None:
    comp = sub.add_parser("compile-cluster", help="compile the pipeline for a cluster (images pinned by digest)")
    comp.add_argument("--cluster", type=Path, default=Path("manifests/cluster-config.yaml"), help="cluster YAML")
    comp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a cluster setting")
    comp.add_argument("--pipeline", type=Path, default=Path("pipeline.py"))
    comp.add_argument("--out", type=Path, default=Path("build/pipeline.yaml"))
    comp.set_defaults(func=_compile_cluster)

    upload = sub.add_parser("upload", help="upload the compiled pipeline (new pipeline, or a new version)")
    _host_options(upload)
    upload.add_argument("--package", type=Path, default=Path("build/pipeline.yaml"))
    upload.add_argument("--name", default=DEFAULT_PIPELINE, help="pipeline name on the server")
    upload.add_argument("--version", help="version name (default: <git sha>-<UTC timestamp>)")
    upload.add_argument("--description", default="")
    upload.set_defaults(func=_upload)

    submit = sub.add_parser("submit", help="start a run of the uploaded pipeline (newest version) or of a package")
    _host_options(submit)
    submit.add_argument("--name", default=DEFAULT_PIPELINE, help="uploaded pipeline to run")
    submit.add_argument("--version-id", help="pipeline version (default: the newest)")
    submit.add_argument("--package", type=Path, help="run this compiled YAML instead of an uploaded pipeline")
    submit.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    submit.add_argument("--run-name")
    submit.add_argument("--service-account", help="Kubernetes service account of the run's pods")
    submit.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE", help="pipeline parameter")
    add_recipe_option(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeded")
    submit.add_argument("--timeout-s", type=float, default=24 * 3600)
    submit.set_defaults(func=_submit)

    sched = sub.add_parser("schedule", help="create a recurring run (6-field cron, one at a time, no catch-up)")
    _host_options(sched)
    sched.add_argument(
        "--cron", required=True, help="second minute hour day-of-month month day-of-week, e.g. '0 0 3 * * 1'"
    )
    sched.add_argument("--schedule-name", default="vesselseg-retrain", help="recurring run name")
    sched.add_argument("--name", default=DEFAULT_PIPELINE, help="uploaded pipeline to schedule")
    sched.add_argument("--version-id", help="pipeline version (default: the newest)")
    sched.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    sched.add_argument("--service-account", help="Kubernetes service account of the runs' pods")
    sched.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE", help="pipeline parameter")
    add_recipe_option(sched)
    sched.add_argument("--replace", action="store_true", help="delete a recurring run of the same name first")
    sched.set_defaults(func=_schedule)

"""`vesselseg` command line: the embedded store, one subcommand per stage, local runs and compilation."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from vesselseg.cluster.commands import add_cluster_commands
from vesselseg.config import apply_overrides, load_config
from vesselseg.errors import VesselsegError
from vesselseg.recipes import add_recipe_option, with_recipe
from vesselseg.stages import stage_contract, stage_names


def _store(args: argparse.Namespace) -> int:
    from vesselseg.storage import server

    if args.action == "up":
        state = server.up()
    elif args.action == "down":
        stopped = server.down()
        print("stopped" if stopped else "no store process was running")
        return 0
    else:
        state = server.status()
    print(json.dumps(state.model_dump(), indent=2))
    return 0 if state.up or args.action == "status" else 1


def _stage(args: argparse.Namespace) -> int:
    stage = stage_contract(args.command)
    config = load_config(stage.config, args.config, args.set)
    result = stage.run(config)
    text = result.model_dump_json(indent=2)
    if args.result:
        Path(args.result).write_text(text)
    print(text)
    return 0


def _run_local(args: argparse.Namespace) -> int:
    from vesselseg.local_run import run_local
    from vesselseg.opt_ins import ENV

    # The tasks (subprocesses) inherit the environment: this is how the operator's opt-ins reach them.
    for name in ENV:
        if getattr(args, name):
            os.environ[ENV[name]] = "true"
    run_local(
        pipeline_file=args.pipeline,
        overrides=with_recipe(args.recipe, args.set),
        out_dir=args.out,
        cache=not args.no_cache,
        runner=args.runner,
        image_cpu=args.image_cpu,
        image_gpu=args.image_gpu,
    )
    return 0


def _compile(args: argparse.Namespace) -> int:
    from vesselseg.local_run import compile_pipeline

    print(compile_pipeline(args.pipeline, args.out, apply_overrides({}, args.set)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vesselseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    store = sub.add_parser("store", help="the embedded SeaweedFS object store on 127.0.0.1")
    store.add_argument("action", choices=["up", "down", "status"])
    store.set_defaults(func=_store)

    for name in stage_names():
        stage = sub.add_parser(name, help=f"run the {name} stage")
        stage.add_argument("config", nargs="?", type=Path, help="YAML config file (defaults apply without one)")
        stage.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
        stage.add_argument("--result", type=Path, help="also write the result JSON here")
        stage.set_defaults(func=_stage)

    local = sub.add_parser("run-local", help="run the pipeline through kfp.local against the embedded store")
    local.add_argument("--pipeline", type=Path, default=Path("pipeline.py"))
    local.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE", help="pipeline parameter")
    add_recipe_option(local)
    local.add_argument("--out", type=Path, default=Path("runs"), help="where the run's summary and report go")
    local.add_argument("--no-cache", action="store_true", help="re-run every task")
    local.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="run each task in this interpreter (default) or in its own container of the project's images",
    )
    local.add_argument("--image-cpu", help="docker runner: the CPU image (default: build/images.env's)")
    local.add_argument("--image-gpu", help="docker runner: the image of finetune and infer (default: the CPU image)")
    local.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="operator opt-in: infer may load a model folder that ships its own Python code (SECURITY.md)",
    )
    local.add_argument(
        "--trust-pickle",
        action="store_true",
        help="operator opt-in: convert may unpickle a checkpoint that holds Python objects (SECURITY.md)",
    )
    local.set_defaults(func=_run_local)

    comp = sub.add_parser("compile", help="compile the pipeline to KFP IR YAML")
    comp.add_argument("--pipeline", type=Path, default=Path("pipeline.py"))
    comp.add_argument("--out", type=Path, default=Path("build/pipeline.yaml"))
    comp.add_argument(
        "--set", action="append", default=[], metavar="PARAM=VALUE", help="a pipeline parameter's compiled default"
    )
    comp.set_defaults(func=_compile)

    add_cluster_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except VesselsegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

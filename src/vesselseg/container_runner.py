"""The local DAG's tasks in containers: kfp.local's DockerRunner, checked before the run and recorded during it.

Each task runs in its own container of the project's images on the host network, so that it reaches the embedded
object store on 127.0.0.1 (and nothing a bridge network would add). kfp 2.17.3's `run_docker_container` starts
containers with `auto_remove=True` and reads the exit code of one already removed as 0, so a task that failed could
be logged as SUCCESS; while a run is in progress, `recording_containers` puts in its place a version that keeps each
container until its exit code and image are read, records them, then removes it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from vesselseg.errors import VesselsegError

IMAGES_ENV = Path("build") / "images.env"
BUILD_HINT = "build it with `make images BASE=debian IMAGES=cpu` (or BASE=official where a registry is reachable)"


class ContainerError(VesselsegError):
    """No Docker engine, a missing image, or a task that failed in its container."""


class LocalImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str
    id: str


class LocalImages(BaseModel):
    """The images the run's tasks use: GPU stages (finetune, infer) take `gpu`, every other stage `cpu`."""

    model_config = ConfigDict(frozen=True)

    cpu: LocalImage
    gpu: LocalImage


class TaskContainer(BaseModel):
    """One task's container, as the engine reported it after the task ended."""

    task: str
    image: str
    image_id: str
    container_id: str
    exit_code: int
    wall_s: float


def docker_client() -> Any:
    """A client of an engine that answers, or one line saying how to get one."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as err:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ContainerError(
            f"no Docker engine answers at {where} ({type(err).__name__}): install one (Debian: apt-get install "
            "docker.io) and start it (as root: docker/engine.sh start), or use --runner subprocess"
        ) from None
    return client


def _images_env(project: Path) -> dict[str, str]:
    path = project / IMAGES_ENV
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def resolve_images(client: Any, project: Path, cpu: str | None, gpu: str | None) -> LocalImages:
    """The CPU and GPU images by reference and id. The CPU image: the one given, else VESSELSEG_LOCAL_IMAGE_CPU from
    the environment or build/images.env. The GPU stages take the CPU image unless one is given: kfp.local's
    containers get no GPU, and the CPU image trains and predicts on the CPU."""
    import docker

    cpu = cpu or {**_images_env(project), **os.environ}.get("VESSELSEG_LOCAL_IMAGE_CPU")
    gpu = gpu or cpu
    if not cpu:
        raise ContainerError(f"no CPU image named and {project / IMAGES_ENV} names none: {BUILD_HINT}")
    found = {}
    for role, ref in (("cpu", cpu), ("gpu", gpu)):
        try:
            found[role] = LocalImage(ref=ref, id=client.images.get(ref).id)
        except docker.errors.ImageNotFound:
            raise ContainerError(
                f"the {role.upper()} image {ref} is not in the local Docker engine: {BUILD_HINT}"
            ) from None
    return LocalImages.model_validate(found)


def _task_of(command: list[str]) -> str:
    """The task's name: the folder of its executor output file, `<pipeline root>/<run>/<task>/...`."""
    executor_input = json.loads(command[command.index("--executor_input") + 1])
    return Path(executor_input["outputs"]["outputFile"]).parent.name


@contextmanager
def recording_containers(env: dict[str, str]) -> Iterator[list[TaskContainer]]:
    """While active, DockerRunner tasks get `env` and are recorded in the yielded list, in the order they end.
    A run that stops early (an error, Ctrl-C, SIGTERM) removes the containers it started."""
    from kfp.local import docker_task_handler

    records: list[TaskContainer] = []
    run_label = {"vesselseg.run": uuid.uuid4().hex}

    def run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any) -> int:
        task = _task_of(command)
        started = time.perf_counter()
        run_args["environment"] = {**env, **(run_args.get("environment") or {})}
        container = client.containers.run(
            image=image,
            command=command,
            detach=True,
            volumes=volumes,
            labels={"vesselseg.task": task, **run_label},
            **run_args,
        )
        try:
            for chunk in container.logs(stream=True, follow=True):
                sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
            exit_code = int(container.wait()["StatusCode"])
            container.reload()
            records.append(
                TaskContainer(
                    task=task,
                    image=image,
                    image_id=container.attrs["Image"],
                    container_id=container.id,
                    exit_code=exit_code,
                    wall_s=round(time.perf_counter() - started, 1),
                )
            )
        finally:
            container.remove(force=True)
        if exit_code != 0:
            print(f"task {task} exited with {exit_code} in container {container.id[:12]} of {image}", file=sys.stderr)
        return exit_code

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        yield records
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        docker_task_handler.run_docker_container = original
        client = docker_client()
        for container in client.containers.list(
            all=True, filters={"label": f"vesselseg.run={run_label['vesselseg.run']}"}
        ):
            container.remove(force=True)
        client.close()

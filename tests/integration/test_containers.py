"""Container tier: the CPU image built from the Dockerfile, and the DAG run in containers of it.

Needs a Docker engine: the tier installs one where it is root on Debian (docker/engine.sh install), starts dockerd
when none answers and stops what it started. Where Docker cannot run, every test here is skipped with the reason
(`make test` prints it; VESSELSEG_REQUIRE_DOCKER=1 makes that a failure). The image is built with a Python base made
from Debian packages (BASE=debian, the one that needs no registry) unless VESSELSEG_TEST_BASE says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHORT_DAG
from vesselseg.storage import ObjectStore

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "docker" / "engine.sh"
VESSELSEG = Path(sys.executable).parent / "vesselseg"
TASKS = {"data-prep", "finetune", "convert", "infer", "baseline", "evaluate", "visualize", "promote"}
SHORT_RUN = ["seed=5", *SHORT_DAG]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("VESSELSEG_REQUIRE_DOCKER") == "1":
        pytest.fail(f"VESSELSEG_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    if os.geteuid() == 0 and Path("/etc/debian_version").exists():
        done = subprocess.run([str(ENGINE), "install"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            _skip_or_fail(f"Docker cannot run here: installing docker.io failed: {done.stderr.strip()[-300:]}")
    done = subprocess.run([str(ENGINE), "start"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        _skip_or_fail(f"Docker cannot run here: {done.stderr.strip()[-400:]}")
    yield
    if done.stdout.strip() == "started":
        subprocess.run([str(ENGINE), "stop"], check=True, timeout=120)


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


@pytest.fixture(scope="module")
def cpu_image(engine: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Builds the CPU image as `make images` does (cached layers are reused); returns its images.env entries."""
    out = tmp_path_factory.mktemp("images") / "images.env"
    base = os.environ.get("VESSELSEG_TEST_BASE", "debian")
    done = subprocess.run(
        ["bash", str(ROOT / "docker" / "build-images.sh")],
        cwd=ROOT,
        env={**os.environ, "BASE": base, "IMAGES": "cpu", "IMAGES_ENV": str(out), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return _env_file(out)


def _in_image(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, *command], capture_output=True, text=True, timeout=300
    )


def _lock() -> dict[str, str]:
    pins = (line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_cpu_image_holds_the_lock_runs_non_root_and_ships_no_build_tools(cpu_image: dict[str, str]) -> None:
    image = cpu_image["VESSELSEG_LOCAL_IMAGE_CPU"]
    freeze = _in_image(image, "python", "-m", "pip", "freeze", "--exclude", "vesselseg")
    assert freeze.returncode == 0, freeze.stderr
    installed = dict(line.split("==") for line in freeze.stdout.splitlines())
    assert {name.lower().replace("_", "-"): v for name, v in installed.items()} == _lock()

    default = _in_image(image)
    assert default.returncode == 0 and "usage: vesselseg" in default.stdout, default.stdout + default.stderr
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=True).stdout)
    config = inspect[0]["Config"]
    assert config["User"] == "1000" and not config["Entrypoint"] and config["Cmd"] == ["vesselseg", "--help"]
    assert config["Labels"]["org.opencontainers.image.base.digest"] == cpu_image["VESSELSEG_BASE_DIGEST"]
    assert inspect[0]["Id"] == cpu_image["VESSELSEG_LOCAL_IMAGE_CPU_ID"]
    assert not any(entry.startswith("PIP_CERT") for entry in config["Env"])

    probe = _in_image(
        image, "sh", "-c", "id -u; for t in gcc g++ cc c++ make; do command -v $t; done; ls -A /tmp/pip; true"
    )
    assert probe.stdout.splitlines() == ["1000"], f"not uid 1000, or build tools / staged pip files: {probe.stdout}"
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_ca.exists():
        found = _in_image(
            image, "sh", "-c", "find / -xdev -type f \\( -name '*.pem' -o -name '*.crt' \\) -exec sha256sum {} +"
        )
        assert hashlib.sha256(host_ca.read_bytes()).hexdigest() not in found.stdout, (
            "the host's CA bundle is in the image"
        )

    # DeepSpeed's CPU communication op is prebuilt: it loads without a compiler.
    op = _in_image(
        image,
        "python",
        "-c",
        "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; print(ShareMemCommBuilder().load().__name__)",
    )
    assert op.returncode == 0 and "deepspeed_shm_comm" in op.stdout, op.stdout + op.stderr


def _run_local(tmp: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VESSELSEG_HOME": str(home or tmp / "home")}
    return subprocess.run(
        [str(VESSELSEG), "run-local", "--no-cache", "--out", str(tmp / "runs"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.mark.slow
def test_dag_runs_each_task_in_a_container_and_matches_the_subprocess_runner(
    cpu_image: dict[str, str], store_settings, tmp_path: Path
) -> None:
    image, image_id = cpu_image["VESSELSEG_LOCAL_IMAGE_CPU"], cpu_image["VESSELSEG_LOCAL_IMAGE_CPU_ID"]
    docker_run = _run_local(tmp_path / "docker", "--runner", "docker", "--image-cpu", image, *_sets(SHORT_RUN))
    assert docker_run.returncode == 0, docker_run.stdout[-4000:] + docker_run.stderr[-4000:]
    record = json.loads((tmp_path / "docker" / "runs" / "latest" / "run.json").read_text())
    assert record["runner"] == "docker" and record["status"] == "succeeded"
    assert record["images"]["cpu"] == {"ref": image, "id": image_id}
    ran = {c["task"]: c for c in record["containers"]}
    assert set(ran) == TASKS
    assert all(c["image_id"] == image_id and c["exit_code"] == 0 for c in ran.values()), ran

    summary = json.loads((tmp_path / "docker" / "runs" / "latest" / "summary.json").read_text())
    metrics = summary["metrics"]
    assert set(metrics) == {"model", "frangi", "all_background", "all_foreground"}
    assert metrics["frangi"]["dice"] > metrics["all_background"]["dice"] == 0.0
    assert 0.0 <= metrics["model"]["dice"] <= 1.0

    local_run = _run_local(tmp_path / "subprocess", *_sets(SHORT_RUN))
    assert local_run.returncode == 0, local_run.stdout[-4000:] + local_run.stderr[-4000:]
    local = json.loads((tmp_path / "subprocess" / "runs" / "latest" / "summary.json").read_text())["metrics"]
    for predictor, values in metrics.items():
        for name, value in values.items():
            if isinstance(value, float):
                assert value == pytest.approx(local[predictor][name], abs=1e-6), (predictor, name)


def _sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


@pytest.mark.slow
def test_a_task_failing_in_its_container_stops_the_run_and_publishes_nothing(
    cpu_image: dict[str, str], store: ObjectStore, tmp_path: Path
) -> None:
    prefix = f"tests/{uuid.uuid4().hex[:12]}/training"
    failing = [*SHORT_RUN, f"finetune_overrides.prefix={prefix}", "finetune_overrides.training.val_split=nowhere"]
    done = _run_local(
        tmp_path, "--runner", "docker", "--image-cpu", cpu_image["VESSELSEG_LOCAL_IMAGE_CPU"], *_sets(failing)
    )
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "has no images in its 'nowhere' split" in done.stdout, "the container's log is shown"
    assert "finetune" in done.stderr.splitlines()[-1]
    record = json.loads((tmp_path / "runs" / "latest" / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["containers"][-1]["task"] == "finetune" and record["containers"][-1]["exit_code"] != 0
    assert not {"convert", "infer", "evaluate", "visualize", "promote"} & {c["task"] for c in record["containers"]}
    assert not list(store.client.list_objects(store.bucket, prefix=prefix, recursive=True))


def test_a_missing_image_is_named_with_how_to_build_it(engine: None, tmp_path: Path) -> None:
    done = _run_local(tmp_path, "--runner", "docker", "--image-cpu", "vesselseg-cpu:not-built")
    assert done.returncode == 2
    assert "vesselseg-cpu:not-built is not in the local Docker engine" in done.stderr and "make images" in done.stderr


def test_without_a_docker_engine_the_run_says_how_to_get_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [str(VESSELSEG), "run-local", "--runner", "docker", "--out", str(tmp_path / "runs")],
        cwd=ROOT,
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "VESSELSEG_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Docker engine answers" in lines[0] and "apt-get install docker.io" in lines[0]
    assert not home.exists(), "nothing starts before the engine is found"


def test_cuda_image_imports_everything_without_a_gpu_and_prints_stage_help(engine: None) -> None:
    """The CUDA image is a multi-GB download, so this runs where it was built (`make images IMAGES=cuda`)."""
    built = _env_file(ROOT / "build" / "images.env") if (ROOT / "build" / "images.env").exists() else {}
    image = os.environ.get("VESSELSEG_LOCAL_IMAGE_GPU") or built.get("VESSELSEG_LOCAL_IMAGE_GPU")
    if not image or subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        pytest.skip("no CUDA image built here: make images BASE=debian IMAGES=cuda (several GB of CUDA wheels)")
    probe = _in_image(
        image,
        "python",
        "-c",
        "import torch, deepspeed, transformers, vesselseg; "
        "print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), deepspeed.__version__)",
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    torch_version, cuda, available, deepspeed_version = probe.stdout.split()[-4:]
    lock = _lock()
    assert torch_version.split("+")[0] == lock["torch"].split("+")[0] and deepspeed_version == lock["deepspeed"]
    assert cuda != "None" and available == "False", probe.stdout
    print(f"CUDA image: torch {torch_version} built for CUDA {cuda}")
    freeze = _in_image(image, "python", "-m", "pip", "freeze", "--exclude", "vesselseg")
    installed = {name.lower().replace("_", "-"): v for name, v in (line.split("==") for line in freeze.stdout.split())}
    assert {name: installed.get(name) for name in lock if name != "torch"} == {
        n: v for n, v in lock.items() if n != "torch"
    }
    for stage in ("finetune", "infer"):
        done = _in_image(image, "vesselseg", stage, "--help")
        assert done.returncode == 0 and f"usage: vesselseg {stage}" in done.stdout, done.stdout + done.stderr

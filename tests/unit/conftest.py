"""The unit tier: no object store, no network, no subprocess. A test here that starts a process or opens a network
connection fails, naming what it tried; such a test belongs in tests/integration/."""

from __future__ import annotations

import socket
import subprocess

import pytest


class TierViolation(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _unit_tier_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process(self: subprocess.Popen, args: object, *rest: object, **kwargs: object) -> None:
        raise TierViolation(f"a unit test started a process ({args!r}): move the test to tests/integration/")

    real_connect = socket.socket.connect

    def local_only(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise TierViolation(
                f"a unit test opened a network connection to {address!r}: move it to tests/integration/"
            )
        real_connect(self, address)

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    monkeypatch.setattr(socket.socket, "connect", local_only)

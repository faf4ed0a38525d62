"""The embedded store serves S3 and no unauthenticated extras, and `store down` kills only its own server.

A second `weed mini` is started here on a free S3 port with its own work dir (VESSELSEG_HOME), so the shared
store other tests use is never touched; `weed mini` moves its other listeners off ports already taken.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from vesselseg.storage import ObjectStore, StoreSettings, server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("VESSELSEG_HOME", str(home))
    return home


@pytest.fixture()
def second_store(own_home: Path) -> Iterator[tuple[StoreSettings, int]]:
    settings = StoreSettings(endpoint=f"127.0.0.1:{free_port()}")
    state = server.up(settings)
    assert state.pid is not None and state.data_dir.startswith(str(own_home))
    try:
        yield settings, state.pid
    finally:
        assert server.down()


def answer(port: int, method: str, headers: dict[str, str]) -> tuple[int, bytes] | None:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        connection.request(method, "/", headers=headers)
        response = connection.getresponse()
        return response.status, response.read(4096)
    except (OSError, http.client.HTTPException):
        return None  # gRPC ports reset an HTTP/1 request


def test_the_store_serves_s3_but_no_webdav_filer_listing_or_telemetry(second_store: tuple[StoreSettings, int]) -> None:
    settings, pid = second_store
    store = ObjectStore(settings)
    store.put_bytes("tests/hello.txt", b"hello")
    assert store.get_bytes("tests/hello.txt") == b"hello"

    ports = sorted({c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN"})
    assert ports and all(c.laddr.ip == "127.0.0.1" for c in psutil.Process(pid).net_connections("tcp"))
    for port in ports:
        webdav = answer(port, "PROPFIND", {"Depth": "1"})
        assert webdav is None or webdav[0] != 207, f"port {port} answers WebDAV without credentials"
        page = answer(port, "GET", {"Accept": "text/html"})
        assert page is None or b"SeaweedFS Filer" not in page[1], f"port {port} serves the filer's folder UI"
    argv = psutil.Process(pid).cmdline()
    assert "-master.telemetry=false" in argv  # nothing to observe offline: the switch itself is the check


def test_store_down_leaves_a_process_that_is_not_its_server_alive(own_home: Path) -> None:
    """A stale pid file whose pid now belongs to something else (here a sleep in its own session)."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pid_file = own_home / "store" / "weed.pid"
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(str(other.pid))
        assert server.status().pid is None
        assert server.down() is False
        assert other.poll() is None, "store down killed a process that was not its weed mini"
        assert not pid_file.exists()
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()

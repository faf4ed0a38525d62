"""Local work folders of fine-tuning launches: one per launch, removed by its owner or, once abandoned, by a later one.

Two identical runs on one shared volume would otherwise share a folder named by the run and delete each other's
files. A launch holds an exclusive `flock` on `<folder>.lock` for as long as it lives; the kernel drops the lock
when the process dies however it dies, so a lock that can be taken marks a folder nobody uses any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
LAUNCH_SUFFIX = "-launch"


def new_workdir(root: Path, run_name: str) -> Path:
    """A folder name no other launch of `run_name` uses."""
    return Path(root) / f"{run_name}-{uuid.uuid4().hex[:12]}"


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(f"{folder}{LAUNCH_SUFFIX}", ignore_errors=True)


@contextlib.contextmanager
def claimed(folder: Path) -> Iterator[None]:
    """Holds `folder` (and its `-launch` sibling) for this launch; both are removed when the block ends."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(f"{folder}{LOCK_SUFFIX}")
    handle = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        _remove(folder)
        lock.unlink(missing_ok=True)
        os.close(handle)


def remove_abandoned(root: Path, run_name: str) -> list[Path]:
    """Removes the folders of `run_name`'s launches that died before cleaning up; returns them."""
    removed = []
    for lock in sorted(Path(root).glob(f"{run_name}-*{LOCK_SUFFIX}")):
        try:
            handle = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue  # its owner finished meanwhile
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            continue  # a live launch
        folder = Path(str(lock).removesuffix(LOCK_SUFFIX))
        _remove(folder)
        lock.unlink(missing_ok=True)
        os.close(handle)
        removed.append(folder)
        log.info("removed the work folder %s of a launch that died", folder)
    return removed

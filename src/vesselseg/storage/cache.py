"""Fetch once: a machine's local copy of published artifact files, shared by the stages of a run.

An artifact is immutable under its manifest's sha256, so its files are kept under `<cache>/<manifest sha256>/<path>`,
where `<cache>` is `VESSELSEG_CACHE_DIR`, else `<work dir>/cache/artifacts` (the work dir is `VESSELSEG_HOME`: `.work/`
locally; in the images' pods an emptyDir, so there the cache serves one task unless the cluster configuration's
`artifact_cache` mounts a volume the tasks share and points `VESSELSEG_CACHE_DIR` at it). A stage asks for the files it
needs; those not yet there are downloaded, the rest are reused once they verify against the manifest (size and sha256: a
cached file is never trusted by its name alone, and one that changed is fetched again). The stage's folder then receives
hard links to the cached files (a copy where the file system refuses links). Publishing seeds the cache with hard links
to the files just uploaded, so a later stage on the same machine downloads nothing of an artifact made there.

A stage must not write into the files it fetched or published (replace them by a new name and a rename instead):
they share their storage with the cache, and with the publisher's own copy. Because every use re-verifies the
cached copy, such a write costs a download, never a wrong input; the safe-load test, which poisons a fetched
checkpoint on purpose, relies on exactly that.

Stages that run at once (kfp.local runs independent tasks in parallel) take a lock per artifact while filling it,
and every download lands under a temporary name first and is renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vesselseg.storage.object_store import FileEntry, ObjectStore, sha256_file
from vesselseg.storage.paths import inside
from vesselseg.storage.settings import CACHE_DIR_ENV, work_dir

log = logging.getLogger(__name__)


def cache_root() -> Path:
    if folder := os.environ.get(CACHE_DIR_ENV):
        return Path(folder).resolve()
    return work_dir() / "cache" / "artifacts"


def _verified(path: Path, entry: FileEntry) -> bool:
    try:
        return path.is_file() and path.stat().st_size == entry.size and sha256_file(path) == entry.sha256
    except OSError:
        return False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fill(store: ObjectStore, prefix: str, manifest_sha256: str, entries: list[FileEntry], what: str) -> Path:
    """The cache folder of the artifact at key `prefix` (manifest hash `manifest_sha256`) holding `entries`, each
    verified; `what` names the manifest in errors about unsafe paths."""
    folder = cache_root() / manifest_sha256
    targets = [inside(folder, entry.path, what) for entry in entries]
    with _locked(cache_root() / f"{manifest_sha256}.lock"):
        for entry, target in zip(entries, targets, strict=True):
            if _verified(target, entry):
                continue
            if target.exists():
                log.warning("cache: %s does not match its manifest; fetched again", target)
                target.unlink()
            store.download_file(
                prefix + entry.path,
                target,
                expected=FileEntry(path=prefix + entry.path, sha256=entry.sha256, size=entry.size),
                root=folder,
            )
    return folder


def link_into(folder: Path, entries: list[FileEntry], local_dir: Path, what: str) -> None:
    """Hard links in `local_dir` to the cached files of `entries` (copies across file systems)."""
    for entry in entries:
        source = folder / entry.path
        target = inside(local_dir, entry.path, what)
        if target.exists() and os.path.samefile(source, target):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # A new name, then a rename: a file already at `target` is replaced, never written through.
        partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.link")
        try:
            os.link(source, partial)
        except OSError:
            shutil.copyfile(source, partial)
        os.replace(partial, target)


def seed(manifest_sha256: str, local_dir: Path, entries: list[FileEntry]) -> None:
    """Hard links in the cache to the files just published from `local_dir`. Where the file system refuses links
    nothing is seeded (a copy would double the disk use of every artifact); readers then download as usual."""
    folder = cache_root() / manifest_sha256
    with _locked(cache_root() / f"{manifest_sha256}.lock"):
        for entry in entries:
            target = inside(folder, entry.path, f"cache of {manifest_sha256[:12]}")
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.link")
            try:
                os.link(local_dir / entry.path, partial)
            except OSError:
                return
            os.replace(partial, target)

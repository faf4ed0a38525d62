"""Artifacts: a prefix of files plus a `manifest.json` written last.

A prefix without a manifest does not exist for readers. Publishing removes an old manifest before
touching any file, so a re-run that dies half-way leaves nothing that looks complete. The manifest
records every file's sha256 and size, the producing stage, its config, the input manifests' hashes,
the code version and timings: the provenance chain of every number the pipeline prints.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vesselseg import __version__
from vesselseg.config import ConfigModel
from vesselseg.errors import StorageError
from vesselseg.storage import cache as artifact_cache
from vesselseg.storage.object_store import FileEntry, ObjectStore, sha256_file
from vesselseg.storage.paths import inside, path_problem

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class InputRef(ConfigModel):
    """A pointer to a published artifact: its URI and the sha256 of its manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str
    manifest_sha256: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    kind: str = Field(description="what the artifact holds: dataset, predictions, evaluation, …")
    stage: str
    config: dict[str, Any]
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    files: list[FileEntry]
    code_version: str
    created_at: str
    timings_s: dict[str, float] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict, description="small stage-specific facts")
    run_stats: dict[str, Any] = Field(
        default_factory=dict, description="how this run went (speeds, counts); like timings, not part of its identity"
    )

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: list[FileEntry]) -> list[FileEntry]:
        # Readers join these paths onto a local folder: one that climbs out of it would write anywhere.
        for entry in files:
            if problem := path_problem(entry.path):
                raise ValueError(f"file path {entry.path!r} refused: {problem}")
        return files

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise StorageError(f"artifact has no file {path!r} (manifest lists {len(self.files)} files)")


def code_version() -> str:
    """`VESSELSEG_CODE_VERSION` (set in images) or the git commit of the source tree, else the package version."""
    if version := os.environ.get("VESSELSEG_CODE_VERSION"):
        return version
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def content_key(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts, used to name artifact prefixes by their inputs."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def local_fingerprint(path: Path) -> str:
    """Identity of a local input (a folder or one file) that has no manifest hash: small files by content, large
    ones by name, size and mtime (hashing tens of GB on every run would cost minutes)."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path).as_posix()}\0{stat.st_size}\0".encode())
        digest.update(file.read_bytes() if stat.st_size < (16 << 20) else str(stat.st_mtime_ns).encode())
    return digest.hexdigest()


def _local_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def publish_dir(
    store: ObjectStore,
    local_dir: Path,
    prefix: str,
    *,
    kind: str,
    stage: str,
    config: dict[str, Any],
    inputs: dict[str, InputRef] | None = None,
    timings_s: dict[str, float] | None = None,
    summary: dict[str, Any] | None = None,
    run_stats: dict[str, Any] | None = None,
    cache: bool = True,
    before_visible: Callable[[InputRef], None] | None = None,
) -> tuple[InputRef, Manifest]:
    """Upload every file under `local_dir` to `prefix/` and then its manifest; returns a pointer to it.

    With `cache` (the default) the files also seed this machine's artifact cache (`storage.cache`); without, they
    stay out of it (data that other stages must not find on a shared disk: the test labels).
    `before_visible` is called with that pointer once every file is uploaded and before the manifest makes the
    artifact visible, so a caller can record the artifact as its own before anyone can see it; if it raises, no
    manifest is written. When an identical artifact is kept (below), it is called with the kept one's pointer.
    """
    prefix = prefix.rstrip("/") + "/"
    files = _local_files(local_dir)
    if not files:
        raise StorageError(f"refusing to publish an empty artifact from {local_dir} to {store.uri(prefix)}")
    manifest_key = prefix + MANIFEST
    # Files are filled in below; everything else is known now, which lets an identical re-run stop here.
    manifest = Manifest(kind=kind, stage=stage, config=config, inputs=inputs or {}, files=[],
                        code_version=code_version(), created_at="", timings_s=timings_s or {},
                        summary=summary or {}, run_stats=run_stats or {})  # fmt: skip
    unchanged = _same_as_published(store, manifest_key, local_dir, files, manifest)
    if unchanged is not None:
        log.info("%s already holds these %d files with the same provenance; kept as published", store.uri(prefix),
                 len(files))  # fmt: skip
        if cache:
            artifact_cache.seed(unchanged[0].manifest_sha256, local_dir, unchanged[1].files)
        if before_visible is not None:
            before_visible(unchanged[0])
        return unchanged
    nested = [key for key in store.list(prefix) if key.endswith("/" + MANIFEST) and key != manifest_key]
    if nested:
        shown = ", ".join(store.uri(key) for key in nested[:3]) + (" …" if len(nested) > 3 else "")
        raise StorageError(
            f"refusing to publish to {store.uri(prefix)}: it holds {len(nested)} other artifact(s) below it ({shown}), "
            "which publishing there would overwrite or remove; give the artifact a prefix of its own"
        )
    # Only what the previous artifact listed is its to replace: other keys under the prefix are someone else's.
    stale = {prefix + entry.path for entry in _previous_files(store, manifest_key)}
    # Hide the old artifact first: from here until the new manifest lands, readers see nothing.
    store.delete([manifest_key])
    for index, path in enumerate(files, 1):
        rel = path.relative_to(local_dir).as_posix()
        uploaded = store.upload_file(path, prefix + rel)
        manifest.files.append(FileEntry(path=rel, sha256=uploaded.sha256, size=uploaded.size))
        stale.discard(prefix + rel)
        if index % 200 == 0 or index == len(files):
            log.info("uploaded %d/%d files to %s", index, len(files), store.uri(prefix))
    store.delete(sorted(stale))
    manifest.created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # Validated as readers will validate it (files were appended unchecked).
    blob = Manifest.model_validate(manifest.model_dump()).model_dump_json(indent=2).encode()
    ref = InputRef(uri=store.uri(prefix), manifest_sha256=hashlib.sha256(blob).hexdigest())
    if before_visible is not None:
        before_visible(ref)
    store.put_bytes(manifest_key, blob, content_type="application/json")
    if cache:
        artifact_cache.seed(ref.manifest_sha256, local_dir, manifest.files)
    return ref, manifest


def _previous_files(store: ObjectStore, manifest_key: str) -> list[FileEntry]:
    """The files the artifact at `manifest_key` lists now; none if there is none or it does not validate."""
    if not store.exists(manifest_key):
        return []
    try:
        return Manifest.model_validate_json(store.get_bytes(manifest_key)).files
    except ValueError:
        log.warning("%s does not validate; none of its files are removed by the re-publish", store.uri(manifest_key))
        return []


def _same_as_published(
    store: ObjectStore, manifest_key: str, local_dir: Path, files: list[Path], manifest: Manifest
) -> tuple[InputRef, Manifest] | None:
    """The published artifact, if it already holds exactly these files with `manifest`'s provenance.

    A deterministic stage re-run (the same data-prep config, say) then leaves the artifact alone, so references
    other runs hold to it stay valid; republishing would change the manifest's hash (its timestamp) under them.
    That holds across commits too: the code version that made the same bytes from the same config and inputs is
    how they came about, not what they are, and replacing the manifest for it broke every run at the other commit
    that was reading the artifact. Files are hashed only once everything cheaper (provenance, names, sizes) has
    matched.
    """
    if not store.exists(manifest_key):
        return None
    blob = store.get_bytes(manifest_key)
    try:
        old = Manifest.model_validate_json(blob)
    except ValueError:
        return None
    provenance = {"files", "created_at", "timings_s", "run_stats", "code_version"}
    if old.model_dump(mode="json", exclude=provenance) != manifest.model_dump(mode="json", exclude=provenance):
        return None
    names = [(p.relative_to(local_dir).as_posix(), p.stat().st_size) for p in files]
    if [(f.path, f.size) for f in old.files] != names:
        return None
    if any(f.sha256 != sha256_file(p) for f, p in zip(old.files, files, strict=True)):
        return None
    uri = store.uri(manifest_key.removesuffix(MANIFEST))
    if old.code_version != manifest.code_version:
        log.info("%s: code %s made the same files as the published %s; its manifest is kept", uri,
                 manifest.code_version, old.code_version)  # fmt: skip
    return InputRef(uri=uri, manifest_sha256=hashlib.sha256(blob).hexdigest()), old


def _manifest_blob(store: ObjectStore, ref: InputRef | str) -> tuple[str, bytes]:
    uri = (ref.uri if isinstance(ref, InputRef) else ref).rstrip("/") + "/"
    key = store.key_of(uri + MANIFEST)
    if not store.exists(key):
        raise StorageError(
            f"{uri} is not a published artifact: it has no {MANIFEST} (never published, or its upload did not finish)"
        )
    blob = store.get_bytes(key)
    if isinstance(ref, InputRef) and hashlib.sha256(blob).hexdigest() != ref.manifest_sha256:
        raise StorageError(f"{uri}: manifest changed since it was referenced (sha256 differs); re-run the producer")
    return uri, blob


def resolve(store: ObjectStore, ref: InputRef | str) -> InputRef:
    """Pin a reference: a bare URI becomes an InputRef carrying its manifest's current sha256."""
    uri, blob = _manifest_blob(store, ref)
    return InputRef(uri=uri, manifest_sha256=hashlib.sha256(blob).hexdigest())


def read_manifest(store: ObjectStore, ref: InputRef | str) -> Manifest:
    """The manifest of a published artifact; refuses a prefix without one, one that changed since `ref`, or one that
    does not validate (an unsafe file path, say)."""
    return _parse_manifest(*_manifest_blob(store, ref))


def _parse_manifest(uri: str, blob: bytes) -> Manifest:
    try:
        return Manifest.model_validate_json(blob)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise StorageError(f"{uri}{MANIFEST} is not a valid manifest: {problems}") from err


def fetch_dir(
    store: ObjectStore, ref: InputRef | str, local_dir: Path, only: list[str] | None = None, cache: bool = True
) -> Manifest:
    """Put a published artifact's files (or the listed ones) in `local_dir`, each verified against its manifest.

    With `cache` (the default) they come from this machine's artifact cache (`storage.cache`), which downloads only
    what it lacks; without, straight from the store (for data that must not stay on the machine's shared disk).
    """
    uri, blob = _manifest_blob(store, ref)
    manifest = _parse_manifest(uri, blob)
    prefix = store.key_of(uri)
    what = f"{uri}{MANIFEST}"
    wanted = manifest.files if only is None else [manifest.file(p) for p in only]
    if cache:
        folder = artifact_cache.fill(store, prefix, hashlib.sha256(blob).hexdigest(), wanted, what)
        artifact_cache.link_into(folder, wanted, local_dir, what)
    else:
        for entry in wanted:
            target = inside(local_dir, entry.path, what)
            if target.exists() and target.stat().st_size == entry.size and sha256_file(target) == entry.sha256:
                continue
            store.download_file(
                prefix + entry.path,
                target,
                expected=FileEntry(path=prefix + entry.path, sha256=entry.sha256, size=entry.size),
                root=local_dir,
            )
    local_dir.mkdir(parents=True, exist_ok=True)
    (local_dir / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest


def fetch_raw_prefix(store: ObjectStore, uri: str, local_dir: Path) -> int:
    """Download every object under a prefix that is not an artifact (a raw dataset someone uploaded)."""
    prefix = store.key_of(uri.rstrip("/") + "/")
    keys = store.list(prefix)
    if not keys:
        raise StorageError(f"nothing under {uri}: the raw dataset prefix is empty or misspelt")
    # Keys are whatever the uploader chose: `prefix//etc/x` would otherwise land in /etc.
    targets = [inside(local_dir, key[len(prefix) :], f"object {store.uri(key)} under {uri}") for key in keys]
    for key, target in zip(keys, targets, strict=True):
        store.download_file(key, target, root=local_dir)
    return len(keys)

"""S3 object store through the minio SDK: streaming transfers, sha256 on every file, retries.

Every error names the endpoint, bucket and key so that a user can tell a typo from an outage.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import S3Error, ServerError
from pydantic import BaseModel, ConfigDict, Field

from vesselseg.errors import IntegrityError, StorageError
from vesselseg.storage.paths import check_inside
from vesselseg.storage.settings import StoreSettings
from vesselseg.storage.transfers import Transfers

log = logging.getLogger(__name__)

CHUNK = 1 << 20
T = TypeVar("T")

_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "OperationAborted"}
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}


class WriteConflict(StorageError):
    """A conditional write lost: the object changed, appeared or vanished since the version it was based on."""


class FileEntry(BaseModel):
    """One file of an artifact: path relative to the artifact's prefix, its sha256 and size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str
    size: int = Field(ge=0)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingReader(io.RawIOBase):
    """Hashes bytes as the SDK pulls them, so an upload reads its file once and holds one part."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data

    def readable(self) -> bool:
        return True


class ObjectStore:
    """A bucket on an S3-compatible server. Keys are plain strings; URIs are `s3://bucket/key`."""

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings.from_env()
        # The SDK's own pool retries silently for minutes on a dead endpoint; retries here are ours,
        # counted and logged, so the pool gets none.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=120),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=2, status=0),
            maxsize=8,
        )
        self.client = Minio(
            self.settings.endpoint,
            access_key=self.settings.access_key,
            secret_key=self.settings.secret_key,
            secure=self.settings.secure,
            region=self.settings.region,
            http_client=http,
        )
        self.bucket = self.settings.bucket
        self.transfers = Transfers()

    # ----- naming -----
    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_of(self, uri: str) -> str:
        prefix = f"s3://{self.bucket}/"
        if not uri.startswith(prefix):
            raise StorageError(f"URI {uri!r} is not in bucket {self.bucket!r} at {self.settings.location}")
        return uri[len(prefix) :]

    def _where(self, key: str | None) -> str:
        where = f"endpoint {self.settings.location}"
        return f"{where}, key {key!r}" if key else where

    # ----- error handling -----
    def _call(self, what: str, key: str | None, fn: Callable[[], T]) -> T:
        """Run one request, retrying transient failures with exponential backoff."""
        delay = self.settings.backoff_s
        for attempt in range(self.settings.retries + 1):
            try:
                return fn()
            except S3Error as err:
                if err.code in _AUTH_CODES:
                    raise StorageError(
                        f"{what}: credentials refused ({err.code}) at {self._where(key)}; "
                        "check VESSELSEG_S3_ACCESS_KEY / VESSELSEG_S3_SECRET_KEY"
                    ) from err
                if err.code == "NoSuchBucket":
                    raise StorageError(f"{what}: bucket {self.bucket!r} does not exist at {self._where(key)}") from err
                if err.code in {"PreconditionFailed", "ConditionalRequestConflict"}:
                    raise WriteConflict(f"{what}: the object changed since it was read, at {self._where(key)}") from err
                if err.code in {"NoSuchKey", "NoSuchObject"}:
                    raise StorageError(f"{what}: no such object at {self._where(key)}") from err
                if err.code not in _TRANSIENT_CODES or attempt == self.settings.retries:
                    raise StorageError(f"{what}: {err.code}: {err.message} at {self._where(key)}") from err
                reason = err.code
            except (urllib3.exceptions.HTTPError, ServerError, OSError) as err:
                if attempt == self.settings.retries:
                    raise StorageError(
                        f"{what}: cannot reach the object store at {self._where(key)} after "
                        f"{attempt + 1} attempts ({type(err).__name__}: {err}); is it running? "
                        "(`vesselseg store up` starts the local one)"
                    ) from err
                reason = type(err).__name__
            log.warning("%s failed (%s), retry %d/%d in %.1fs", what, reason, attempt + 1, self.settings.retries, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    # ----- bucket -----
    def check(self) -> None:
        """Raise a StorageError naming the problem unless the endpoint answers and the bucket exists."""
        if not self._call("check bucket", None, lambda: self.client.bucket_exists(self.bucket)):
            raise StorageError(f"bucket {self.bucket!r} does not exist at {self._where(None)}")

    def ensure_bucket(self) -> None:
        if not self._call("check bucket", None, lambda: self.client.bucket_exists(self.bucket)):
            self._call("create bucket", None, lambda: self.client.make_bucket(self.bucket))

    # ----- objects -----
    def upload_file(self, path: Path, key: str) -> FileEntry:
        """Stream a file up in multipart parts; returns its sha256 and size, computed in the same pass."""
        size = path.stat().st_size

        def put() -> str:
            with open(path, "rb") as handle:
                reader = _HashingReader(handle)
                self.client.put_object(
                    self.bucket, key, reader, length=size, part_size=self.settings.part_size_mb << 20
                )
                return reader.digest.hexdigest()

        return FileEntry(path=key, sha256=self._call("upload", key, put), size=size)

    def download_file(
        self, key: str, path: Path, expected: FileEntry | None = None, root: Path | None = None
    ) -> FileEntry:
        """Stream an object to `path` (via a temporary name); verify sha256 and size when given.

        With `root`, `path` and its temporary name must both resolve inside `root` (the folder a download was asked
        to fill); either way the temporary file is created afresh, never opened through a link already there.
        """
        # Unique per process and call: concurrent stages filling one cache never share a temporary file.
        partial = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
        if root is not None:
            for target in (path, partial):
                check_inside(root, target, f"download of {self.uri(key)}")
        path.parent.mkdir(parents=True, exist_ok=True)

        def get() -> FileEntry:
            response = self.client.get_object(self.bucket, key)
            digest, size = hashlib.sha256(), 0
            try:
                partial.unlink(missing_ok=True)
                with open(partial, "xb") as handle:
                    for chunk in response.stream(CHUNK):
                        digest.update(chunk)
                        handle.write(chunk)
                        size += len(chunk)
            finally:
                response.close()
                response.release_conn()
            return FileEntry(path=key, sha256=digest.hexdigest(), size=size)

        got = self._call("download", key, get)
        if expected is not None and (got.sha256 != expected.sha256 or got.size != expected.size):
            partial.unlink(missing_ok=True)
            raise IntegrityError(
                f"checksum mismatch for {self._where(key)}: manifest says sha256 {expected.sha256[:12]}… "
                f"size {expected.size}, object has sha256 {got.sha256[:12]}… size {got.size}"
            )
        os.replace(partial, path)
        self.transfers.record(key, got.size)
        return got

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._call(
            "upload",
            key,
            lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type),
        )

    def put_bytes_if(
        self, key: str, data: bytes, etag: str | None, content_type: str = "application/octet-stream"
    ) -> str:
        """Writes `data` only if the object is still the version `etag` names (None: only if there is none yet), in
        one request (S3 If-Match / If-None-Match, which SeaweedFS honours); raises WriteConflict otherwise.
        Returns the new ETag."""
        condition = {"If-None-Match": "*"} if etag is None else {"If-Match": f'"{etag}"'}
        headers = {"Content-Type": content_type, **condition}
        # The SDK's put_object would send unknown headers as user metadata; its single-request PUT sends them as is.
        return self._call(
            "conditional upload", key, lambda: self.client._put_object(self.bucket, key, data, headers=headers).etag
        )

    def get_bytes_and_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the ETag of that very version (for `put_bytes_if`)."""

        def get() -> tuple[bytes, str]:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read(), str(response.headers.get("ETag", "")).strip('"')
            finally:
                response.close()
                response.release_conn()

        data, etag = self._call("download", key, get)
        self.transfers.record(key, len(data), kind="object")
        return data, etag

    def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        data = self._call("download", key, get)
        self.transfers.record(key, len(data), kind="object")
        return data

    def exists(self, key: str) -> bool:
        def stat() -> bool:
            try:
                self.client.stat_object(self.bucket, key)
            except S3Error as err:
                if err.code in {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}:
                    return False
                raise
            return True

        return self._call("stat", key, stat)

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix`, recursively, sorted."""
        return sorted(
            self._call(
                "list",
                prefix,
                lambda: [o.object_name for o in self.client.list_objects(self.bucket, prefix, recursive=True)],
            )
        )

    def copy_prefix(self, src: str, dst: str) -> list[str]:
        """Server-side copy of every object under `src` to the same relative key under `dst`."""
        copied = []
        for key in self.list(src):
            target = dst + key[len(src) :]
            self._call(
                "copy", key, lambda k=key, t=target: self.client.copy_object(self.bucket, t, CopySource(self.bucket, k))
            )
            copied.append(target)
        return copied

    def delete(self, keys: list[str]) -> None:
        if not keys:
            return

        def remove() -> None:
            errors = list(self.client.remove_objects(self.bucket, [DeleteObject(k) for k in keys]))
            if errors:
                raise StorageError(f"delete failed at {self._where(errors[0].name)}: {errors[0].message}")

        self._call("delete", keys[0], remove)

    def delete_prefix(self, prefix: str) -> None:
        self.delete(self.list(prefix))

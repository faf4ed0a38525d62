"""Object storage: settings, the S3 client wrapper, artifacts with manifests, the embedded server."""

from vesselseg.storage.artifact import InputRef, Manifest, fetch_dir, publish_dir, read_manifest, resolve
from vesselseg.storage.object_store import FileEntry, ObjectStore, sha256_file
from vesselseg.storage.settings import StoreSettings

__all__ = [
    "FileEntry",
    "InputRef",
    "Manifest",
    "ObjectStore",
    "StoreSettings",
    "fetch_dir",
    "publish_dir",
    "read_manifest",
    "resolve",
    "sha256_file",
]

"""`load_official`: the hook for `base_model: official:<folder or s3:// URI>` — imported once, then reused.

An object-store source is a published artifact (its manifest's sha256 names the import) or a raw prefix someone
uploaded (its object names do). A local folder is named by its path and its files' sizes and modification
times. The native folder lands under `<VESSELSEG_HOME>/official/<key>/native`; a later call with an unchanged
source loads it with `from_pretrained` instead of importing again. A downloaded source is removed once
imported, since only the native folder is read afterwards.

The object-store client is imported only when a source needs it, so that importing local folders works where
its dependencies are not installed (the GPU machines).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import Sam2Config

from vesselseg.model.modeling import Sa2VAModel
from vesselseg.model.official.importer import REPORT, run_import
from vesselseg.model.processing import Sa2VAProcessor

if TYPE_CHECKING:
    from vesselseg.storage import ObjectStore

OFFICIAL = "official:"


def _is_remote(spec: str) -> bool:
    return spec.startswith("s3://")


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_key(spec: str, store: ObjectStore | None = None) -> str:
    """A name for the source's current content, cheap to compute (no download)."""
    if _is_remote(spec):
        from vesselseg.storage import ObjectStore, resolve
        from vesselseg.storage.artifact import MANIFEST

        store = store or ObjectStore()
        prefix = store.key_of(spec.rstrip("/") + "/")
        if store.exists(prefix + MANIFEST):
            return _key(spec, resolve(store, spec).manifest_sha256)
        return _key(spec, sorted(store.list(prefix)))
    folder = Path(spec).resolve()
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return _key(str(folder), files)


def fetch_source(spec: str, into: Path, store: ObjectStore | None = None) -> Path:
    """The official folder on local disk: `spec` itself, or its download into `into`."""
    if not _is_remote(spec):
        return Path(spec)
    from vesselseg.storage import ObjectStore, fetch_dir
    from vesselseg.storage.artifact import MANIFEST, fetch_raw_prefix

    store = store or ObjectStore()
    if store.exists(store.key_of(spec.rstrip("/") + "/") + MANIFEST):
        fetch_dir(store, spec, into)
    else:
        fetch_raw_prefix(store, spec, into)
    return into


def load_official(
    src: str | Path,
    *,
    preset: str = "auto",
    allow_missing: Iterable[str] = (),
    store: ObjectStore | None = None,
    cache: Path | None = None,
    sam2_config: Sam2Config | None = None,
) -> tuple[Sa2VAModel, Sa2VAProcessor]:
    """The native model and processor of an official Sa2VA folder; `src` may carry the `official:` prefix.

    `preset`, `allow_missing` and `sam2_config` are `import_official`'s; `cache` replaces the cache root.
    """
    spec = str(src).removeprefix(OFFICIAL)
    if cache is None:
        from vesselseg.storage.settings import work_dir

        cache = work_dir() / "official"
    root = cache / source_key(spec, store)
    native = root / "native"
    if (native / REPORT).is_file():
        return Sa2VAModel.from_pretrained(native), Sa2VAProcessor.from_pretrained(native)
    shutil.rmtree(native, ignore_errors=True)  # an import that did not finish
    folder = fetch_source(spec, root / "source", store)
    _, model, processor = run_import(folder, native, preset, allow_missing, sam2_config=sam2_config)
    if _is_remote(spec):
        shutil.rmtree(root / "source", ignore_errors=True)
    return model, processor

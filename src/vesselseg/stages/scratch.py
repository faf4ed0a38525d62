"""Local scratch space for a stage: a fresh folder under the work dir, removed when the stage ends."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vesselseg.storage.settings import work_dir


@contextmanager
def scratch_dir(stage: str) -> Iterator[Path]:
    root = work_dir() / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{stage}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

"""Counting what a process downloads from the object store, to measure (and test) that data is fetched once.

Every `ObjectStore` counts its own downloads. With `VESSELSEG_TRANSFER_LOG` set to a file, each download is also
appended there as one JSON line (`key`, `bytes`, `kind`, `pid`, `time`), so that the stages of a pipeline run, each
in its own process, add up to one account of the run.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

LOG_ENV = "VESSELSEG_TRANSFER_LOG"


class Transfers:
    """Downloads of one store client: how many times each key was fetched, and the bytes in all."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.bytes = 0

    def record(self, key: str, size: int, kind: str = "file") -> None:
        """`kind`: "file" for a streamed artifact file, "object" for a small object read whole (a manifest)."""
        self.counts[key] += 1
        self.bytes += size
        if path := os.environ.get(LOG_ENV):
            line = json.dumps({"key": key, "bytes": size, "kind": kind, "pid": os.getpid(), "time": time.time()})
            # One short append per line: O_APPEND keeps lines of concurrent stages whole.
            with Path(path).open("a") as handle:
                handle.write(line + "\n")

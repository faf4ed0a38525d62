"""Sa2VA-format referring-segmentation annotations with masks as COCO run-length encoding.

One JSON list per split; each image is one entry with one object, the vessel tree::

    {"image": "images/<id>.png", "mask": [{"size": [H, W], "counts": "<COCO RLE>"}], "text": ["blood vessels"]}

Sa2VA's own custom-data format lists polygons per object; vessel trees (thin, branching, full of holes)
do not survive polygonisation, so the mask is the exact compressed RLE of pycocotools, with ``counts``
stored as a str so that the file is plain JSON. Paths are relative to the prepared dataset's root.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a bool (H, W) mask: ``{"size": [H, W], "counts": str}``."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """bool (H, W) mask of a COCO RLE dict whose counts are str (as written here) or bytes."""
    counts = rle["counts"]
    compressed = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():
        # pycocotools' compiled decoder predates numpy 2's __array__(copy=...) protocol; the warning is
        # about its internals, the decoded mask is correct.
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r"__array__ implementation")
        return coco_mask.decode(compressed).astype(bool)


def annotation_entry(image: str, mask: np.ndarray, text: str) -> dict[str, Any]:
    return {"image": image, "mask": [encode_rle(mask)], "text": [text]}


def write_annotations(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, separators=(",", ":")) + "\n")


def read_annotations(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())

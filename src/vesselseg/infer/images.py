"""Where workers read images from: files of the dataset artifact, or synthetic images for benchmarks.

Sources are plain data so a spawned worker process can receive one and open the images itself (decoding runs
in the workers, in parallel, not in the process that collects the results).
"""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image


class ImageSource(Protocol):
    def image(self, sample_id: str) -> np.ndarray:
        """uint8 (H, W, 3) RGB."""
        ...


@dataclass(frozen=True)
class FileImages:
    paths: dict[str, str] = field(default_factory=dict)

    def image(self, sample_id: str) -> np.ndarray:
        with Image.open(self.paths[sample_id]) as img:
            return np.asarray(img.convert("RGB"))


@dataclass(frozen=True)
class SyntheticImages:
    """A dark disc with smooth colour and noise, seeded by the sample id: the same id gives the same image."""

    height: int = 584
    width: int = 565
    seed: int = 0

    def image(self, sample_id: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(sample_id.encode())])
        y, x = np.mgrid[: self.height, : self.width]
        radius = np.hypot((y - self.height / 2) / self.height, (x - self.width / 2) / self.width)
        base = np.clip(1.2 - 2.0 * radius, 0, 1)[..., None] * np.array([200, 90, 40])
        noise = rng.normal(0, 12, (self.height, self.width, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)

    def to_files(self, sample_ids: list[str], folder: Path) -> FileImages:
        """The images as PNG files: drawing one costs several times decoding it, so a benchmark that reads these
        pays for its images what the stage pays for a dataset's."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {sample_id: str(folder / f"{sample_id}.png") for sample_id in sample_ids}
        with ThreadPoolExecutor() as pool:
            list(pool.map(lambda i: Image.fromarray(self.image(i)).save(paths[i]), sample_ids))
        return FileImages(paths)

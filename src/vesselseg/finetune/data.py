"""Training data: samples of a prepared dataset, fundus augmentation, and a data order that ignores world size.

Step `s` (1-based) trains on global-batch positions p = (s−1)·G … s·G−1 of an endless stream; position p is
sample `perm_e[p mod n]` of epoch e = p div n, with `perm_e` a permutation drawn from (seed, e). The global
batch is cut into micro-batches of `micro_batch_size`; rank r's a-th accumulation step takes micro-batch
a·world + r. Augmentation is drawn from (seed, s, position), so neither depends on how many ranks there
are, and resuming at step s needs nothing but s: that is the data loader's whole position.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from vesselseg.data import PreparedDataset, read_annotations
from vesselseg.errors import DataError
from vesselseg.finetune.config import AugmentConfig
from vesselseg.model import Sa2VABatch, Sa2VAProcessor
from vesselseg.model.prompts import FORCED_ANSWER, segmentation_prompt


@dataclass(frozen=True)
class Sample:
    sample_id: str
    text: str  # the referring expression of the annotation, e.g. "blood vessels"


def split_samples(dataset: PreparedDataset, split: str) -> list[Sample]:
    """The split's images with their referring text from `annotations/<split>.json` (one object per image)."""
    ids = dataset.ids(split)
    path = dataset.root / "annotations" / f"{split}.json"
    if not path.is_file():
        raise DataError(f"{path} is missing: the dataset artifact has no {split} annotations")
    texts = {Path(entry["image"]).stem: entry["text"] for entry in read_annotations(path)}
    samples = []
    for sample_id in ids:
        if sample_id not in texts or len(texts[sample_id]) != 1:
            raise DataError(
                f"{path}: sample {sample_id!r} needs exactly one referring text, found {texts.get(sample_id)}"
            )
        samples.append(Sample(sample_id, texts[sample_id][0]))
    return samples


def augment(
    image: np.ndarray, mask: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One random draw applied to a uint8 H×W×3 image and its bool H×W mask.

    Every random number is drawn whether or not its transform is enabled, so switching one transform off does
    not change the others' draws.
    """
    hflip, vflip = rng.random() < config.hflip, rng.random() < config.vflip
    angle = rng.uniform(-config.rotation_deg, config.rotation_deg)
    brightness, contrast, saturation = (
        1 + rng.uniform(-v, v) for v in (config.brightness, config.contrast, config.saturation)
    )
    hue = rng.uniform(-config.hue, config.hue)
    if not config.enabled:
        return image, mask
    if hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if vflip:
        image, mask = image[::-1], mask[::-1]
    picture = Image.fromarray(np.ascontiguousarray(image))
    labels = Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255)
    if angle:
        # Corners that rotate in are black, as outside a fundus camera's field of view.
        picture = picture.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        labels = labels.rotate(angle, resample=Image.Resampling.NEAREST, fillcolor=0)
    picture = ImageEnhance.Brightness(picture).enhance(brightness)
    picture = ImageEnhance.Contrast(picture).enhance(contrast)
    picture = ImageEnhance.Color(picture).enhance(saturation)
    if hue:
        hsv = np.asarray(picture.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(hue * 255)) % 256
        picture = Image.fromarray(hsv, mode="HSV").convert("RGB")
    return np.asarray(picture), np.asarray(labels) >= 128


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n_samples: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_samples)


@dataclass(frozen=True)
class DataOrder:
    """Which sample sits at each global-batch position, and how ranks share a step (module docstring)."""

    n_samples: int
    global_batch_size: int
    micro_batch_size: int
    seed: int

    def positions(self, step: int) -> range:
        start = (step - 1) * self.global_batch_size
        return range(start, start + self.global_batch_size)

    def sample_index(self, position: int) -> int:
        epoch, offset = divmod(position, self.n_samples)
        return int(_permutation(self.seed, epoch, self.n_samples)[offset])

    def micro_batch(self, step: int, accumulation: int, rank: int, world_size: int) -> list[int]:
        """Global-batch positions (0…G−1) of rank `rank`'s micro-batch number `accumulation` in `step`."""
        index = accumulation * world_size + rank
        return list(range(index * self.micro_batch_size, (index + 1) * self.micro_batch_size))


class MicroBatches(torch.utils.data.Dataset):
    """Item k is this rank's k-th micro-batch from `first_step` on, loaded, augmented and collated.

    One item per micro-batch (rather than per sample) keeps the order explicit and lets DataLoader workers
    build whole batches in parallel with training.
    """

    def __init__(
        self,
        dataset: PreparedDataset,
        samples: list[Sample],
        processor: Sa2VAProcessor,
        order: DataOrder,
        augmentation: AugmentConfig,
        first_step: int,
        last_step: int,
        accumulation: int,
        rank: int,
        world_size: int,
    ) -> None:
        self.dataset, self.samples, self.processor, self.order = dataset, samples, processor, order
        self.augmentation = augmentation
        self.first_step, self.accumulation, self.rank, self.world_size = first_step, accumulation, rank, world_size
        self.length = max(0, last_step - first_step + 1) * accumulation

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: int) -> tuple[int, Sa2VABatch]:
        step, accumulation = self.first_step + item // self.accumulation, item % self.accumulation
        positions = self.order.positions(step)
        images, masks, prompts = [], [], []
        for slot in self.order.micro_batch(step, accumulation, self.rank, self.world_size):
            sample = self.samples[self.order.sample_index(positions[slot])]
            rng = np.random.default_rng([self.order.seed, step, slot])
            image, mask = augment(
                self.dataset.image(sample.sample_id), self.dataset.mask(sample.sample_id), self.augmentation, rng
            )
            images.append(image)
            masks.append(mask)
            prompts.append(segmentation_prompt(sample.text))
        batch = self.processor(images, prompts, answers=[FORCED_ANSWER] * len(images), masks=masks)
        return step, batch


def _as_is(item: tuple[int, Sa2VABatch]) -> tuple[int, Sa2VABatch]:
    # Items are already collated; torch's default conversion would turn the Sa2VABatch mapping into a dict.
    return item


def loader(micro_batches: MicroBatches, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        micro_batches,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_is,
        prefetch_factor=2 if num_workers else None,
    )

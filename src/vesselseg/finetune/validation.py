"""Validation Dice during training, with the images shared out over the ranks.

Each rank predicts every world_size-th image (teacher-forced `[SEG]`, as inference does) and turns it into the
evaluation's 8-bit histograms inside the FOV; the histograms are summed over ranks, so the number is the same on
any world size. Every rank runs the same number of forward passes (short shares are padded with a repeat whose
result is dropped), because under ZeRO-3 each forward gathers parameters collectively.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from vesselseg.data import PreparedDataset
from vesselseg.finetune.data import Sample
from vesselseg.metrics import (
    ImageCounts,
    ProbabilityMap,
    best_threshold,
    confusion,
    image_counts,
    level,
    scores,
    threshold_of,
)
from vesselseg.model import Sa2VAModel, Sa2VAProcessor, predict
from vesselseg.model.prompts import segmentation_prompt


def validation_dice(
    model: Sa2VAModel,
    processor: Sa2VAProcessor,
    dataset: PreparedDataset,
    samples: list[Sample],
    batch_size: int,
    device: torch.device,
) -> dict[str, float | int]:
    rank, world = dist.get_rank(), dist.get_world_size()
    share = samples[rank::world]
    padded = share + [samples[0]] * (math.ceil(len(samples) / world) - len(share))
    results = predict(
        model,
        processor,
        [dataset.image(s.sample_id) for s in padded],
        [segmentation_prompt(s.text) for s in padded],
        mode="forced",
        batch_size=batch_size,
    )
    histograms = torch.zeros(2, 256, dtype=torch.int64)
    for sample, result in zip(share, results[: len(share)], strict=True):
        prob = ProbabilityMap.from_probability(result.probabilities[0], sample.sample_id)
        counts = image_counts(prob, dataset.mask(sample.sample_id), dataset.fov(sample.sample_id))
        histograms += torch.from_numpy(np.stack([counts.pos_hist, counts.neg_hist]))
    histograms = histograms.to(device)
    dist.all_reduce(histograms)
    histograms = histograms.cpu().numpy()
    pooled = ImageCounts(histograms[0].copy(), histograms[1].copy(), fov_used=True)
    tuned_level, tuned_dice = best_threshold([pooled])
    return {
        "val_dice": float(scores(*confusion(pooled, level(0.5)))["dice"]),
        "val_dice_tuned": tuned_dice,
        "val_threshold": threshold_of(tuned_level),
        "val_images": len(samples),
    }

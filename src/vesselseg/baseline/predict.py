"""Run the Frangi baseline over dataset splits and write a prediction set."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from vesselseg.baseline.frangi import FrangiConfig, frangi_probability
from vesselseg.data import PreparedDataset
from vesselseg.metrics import ProbabilityMap, best_threshold, image_counts, threshold_of
from vesselseg.predictions import PredictionWriter, PredictorInfo

log = logging.getLogger(__name__)


def dataset_files(dataset: PreparedDataset, split: str, columns: tuple[str, ...]) -> list[str]:
    """Paths (inside the dataset artifact) of the given columns for one split."""
    rows = dataset.index[dataset.index["split"] == split]
    return sorted(str(p) for column in columns for p in rows[column].dropna())


def frangi_predictions(
    dataset: PreparedDataset, splits: list[str], threshold_split: str, config: FrangiConfig, out_dir: Path
) -> PredictorInfo:
    """Vesselness for every image of `splits`; masks cut at the max-Dice threshold on `threshold_split`.

    Only the `threshold_split` ground truth is read (and recorded as read); test masks never are.
    """
    probs = {}
    for split in splits:
        for sample_id in tqdm(dataset.ids(split), desc=f"frangi {split}", unit="img", mininterval=2):
            vesselness = frangi_probability(dataset.image(sample_id), dataset.fov(sample_id), config)
            probs[sample_id] = (split, ProbabilityMap.from_probability(vesselness, sample_id))
    chosen = [i for i in dataset.ids(threshold_split) if i in probs]
    if chosen:
        level, dice = best_threshold([image_counts(probs[i][1], dataset.mask(i), dataset.fov(i)) for i in chosen])
        threshold, source = threshold_of(level), f"max pooled Dice {dice:.4f} on {len(chosen)} {threshold_split} images"
    else:
        threshold, source = 0.5, f"fixed 0.5: no {threshold_split} images were predicted"
    writer = PredictionWriter(out_dir)
    for split, prob in probs.values():
        writer.add(split, prob)
    read = [f for s in splits for f in dataset_files(dataset, s, ("image", "fov"))]
    if chosen:
        read += dataset_files(dataset, threshold_split, ("mask",))
    info = PredictorInfo(
        name="frangi",
        threshold=threshold,
        threshold_source=source,
        calibrated=True,
        read_files=sorted(set(read)),
        details={"method": "skimage.filters.frangi on the green channel", **config.model_dump()},
    )
    writer.close(info)
    log.info("frangi: %d images, threshold %.3f (%s)", len(probs), threshold, source)
    return info

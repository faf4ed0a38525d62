"""Turn a dataset (synthetic, or a folder in a published layout) into the prepared form later stages read.

Written, all paths relative to the output folder::

    images/<id>.png          RGB, native size
    masks/<id>.png           L, 0/255: the (first) annotator's vessels (train and val only)
    fov/<id>.png             L, 0/255: field of view, given or derived
    masks_2nd/<id>.png       only for train/val samples with a second annotator
    index.parquet            one row per sample, columns INDEX_COLUMNS: file paths; height, width;
                             pixel sha256 of image, mask, FOV, second mask (``split.pixel_sha256``);
                             fov_derived and fov_source ("given"/"derived"/"synthetic"); source_image and
                             source_mask (paths relative to the source folder, or "synthetic:<seed>:<i>");
                             vessel_fraction_fov (this image's vessel pixels / its FOV pixels). For test
                             rows the columns of TEST_LABEL_COLUMNS are empty: they live in test_labels/
    annotations/{train,val}.json   Sa2VA format, see ``annotations``
    stats.json               per split: n_images, vessel fraction inside the FOV (pooled over the split's
                             pixels), all-background accuracy inside the FOV (1 - that), fov_source; the
                             test split's label-derived numbers are empty here
    test_labels/             everything derived from the test split's ground truth, published as its own
                             artifact (only the scoring tasks receive it; see ``PreparedDataset``):
        masks/<id>.png, masks_2nd/<id>.png, annotations/test.json
        labels.parquet       sample_id + TEST_LABEL_COLUMNS of the test rows (paths relative to test_labels/)
        stats.json           {"test": the test split's full stats}
        fingerprint.json     {"fingerprint"}: the dataset these labels belong to
    fingerprint.json         written last: {"fingerprint", "config", "n_images"}

The fingerprint is a sha256 over each sample's id, split and pixel hashes (image, mask, FOV, second
mask) and the canonical JSON of the config. Only settings that can change the output enter it: a
folder source counts as "<folder>" (its contents are hashed, not its path), and the synthetic settings
count only for the synthetic source. So the same data prepared the same way has the same fingerprint
on any machine.

Nothing partial: everything is written to a hidden folder beside ``out_dir`` and renamed to ``out_dir``
only once complete; on any error the hidden folder is removed and ``out_dir`` is untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vesselseg.config import ConfigModel
from vesselseg.data.annotations import annotation_entry, write_annotations
from vesselseg.data.layouts import Layout, LayoutChoice, detect_layout, read_layout
from vesselseg.data.loading import ReadLimits, load_sample
from vesselseg.data.samples import SPLITS, FovSource, LoadedSample, OfficialSplit, Split
from vesselseg.data.split import ContentRecord, LeakageGuard, SplitConfig, assign_splits, pixel_sha256
from vesselseg.data.synthetic import SyntheticConfig, generate_fundus
from vesselseg.errors import DataError

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
INDEX_COLUMNS = (
    "sample_id", "split", "image", "mask", "fov", "mask_2nd", "height", "width",
    "image_sha256", "mask_sha256", "fov_sha256", "mask_2nd_sha256", "fov_derived", "fov_source",
    "source_image", "source_mask", "vessel_fraction_fov",
)  # fmt: skip
# The split whose ground truth only the scoring tasks may read, the folder it is written to, and the index
# columns derived from it (kept out of the public index.parquet for that split).
TEST_SPLIT: Split = "test"
TEST_LABELS_DIR = "test_labels"
TEST_LABEL_COLUMNS = ("mask", "mask_2nd", "mask_sha256", "mask_2nd_sha256", "vessel_fraction_fov")


class DataPrepConfig(ConfigModel):
    """What to prepare: the synthetic dataset or a local folder (in ``layout``), how to split it, and
    the referring expression written into the annotations."""

    model_config = ConfigDict(extra="forbid")

    source: str = SYNTHETIC  # "synthetic", or a local folder holding a dataset
    layout: LayoutChoice = "auto"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    referring_text: str = Field("blood vessels", min_length=1)
    limits: ReadLimits = Field(default_factory=ReadLimits, description="refuse inputs that unpack past these")

    @model_validator(mode="after")
    def _layout_needs_a_folder(self) -> DataPrepConfig:
        if self.source == SYNTHETIC and self.layout != "auto":
            raise ValueError(f"layout {self.layout!r} applies to folder sources; source 'synthetic' takes 'auto'")
        return self


class SplitStats(BaseModel):
    """One split's numbers; the all-background accuracy is the floor any model's accuracy must beat."""

    model_config = ConfigDict(extra="forbid")

    n_images: int
    vessel_fraction_fov: float | None  # None for an empty split
    all_background_accuracy_fov: float | None
    fov_source: Literal["given", "derived", "synthetic", "mixed"] | None


class DatasetSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layout: str  # "synthetic" or the folder's layout
    n_images: int
    splits: dict[Split, SplitStats]  # as stats.json says: the test split's label-derived numbers empty
    test_labels: SplitStats  # the test split in full, as test_labels/stats.json says
    fingerprint: str


def prepare_dataset(cfg: DataPrepConfig, out_dir: Path) -> DatasetSummary:
    """Prepare the dataset ``cfg`` names into ``out_dir``, which must not exist or be empty."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"output folder {out_dir} already exists and is not empty; give a new one")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the published folder should get the usual permissions, not mkdtemp's 0700.
    staging = out_dir.parent / f".{out_dir.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        summary = _write_dataset(cfg, staging)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("data-prep: %d images written to %s (fingerprint %s)", summary.n_images, out_dir, summary.fingerprint)
    return summary


SampleLoader = Callable[[str], LoadedSample]


def _open_source(cfg: DataPrepConfig) -> tuple[str, list[tuple[str, OfficialSplit | None]], SampleLoader]:
    """(layout name, [(sample_id, official split)], loader of one sample by id)."""
    if cfg.source == SYNTHETIC:
        syn = cfg.synthetic
        ids = {f"synthetic_{i:04d}": i for i in range(syn.count)}

        def load_synthetic(sample_id: str) -> LoadedSample:
            index = ids[sample_id]
            fundus = generate_fundus(syn.size, syn.seed, index)
            origin = f"synthetic:{syn.seed}:{index}"
            return LoadedSample(
                sample_id, fundus.image, fundus.mask, fundus.fov, "synthetic", None, None, origin, origin
            )

        return SYNTHETIC, [(sid, None) for sid in ids], load_synthetic
    root = Path(cfg.source).expanduser()
    if not root.is_dir():
        raise DataError(f"source {cfg.source!r} is neither 'synthetic' nor an existing folder")
    layout: Layout = detect_layout(root) if cfg.layout == "auto" else cfg.layout
    raws = {raw.sample_id: raw for raw in read_layout(root, layout)}
    log.info("data-prep: %d images in %s, layout %s", len(raws), root, layout)
    samples = [(sid, raw.official_split) for sid, raw in raws.items()]
    return layout, samples, lambda sid: load_sample(raws[sid], root, cfg.limits)


def _write_dataset(cfg: DataPrepConfig, root: Path) -> DatasetSummary:
    layout, samples, load = _open_source(cfg)
    splits = assign_splits(samples, cfg.split)
    for folder in ("images", "masks", "fov", TEST_LABELS_DIR, f"{TEST_LABELS_DIR}/masks"):
        (root / folder).mkdir()
    guard = LeakageGuard()
    rows: list[dict[str, object]] = []
    tallies = {split: _Tally() for split in SPLITS}
    entries: dict[Split, list[dict[str, object]]] = {split: [] for split in SPLITS}
    for sample in _with_progress([sid for sid, _ in samples], load):
        split = splits[sample.sample_id]
        row = _write_sample(sample, split, root)
        guard.add(ContentRecord(sample.sample_id, split, str(row["image_sha256"]), sample.source_image))
        rows.append(row)
        tallies[split].add(sample)
        entries[split].append(annotation_entry(str(row["image"]), sample.mask, cfg.referring_text))

    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).sort_values("sample_id", ignore_index=True)
    fingerprint = dataset_fingerprint(index, cfg)
    labels_root = root / TEST_LABELS_DIR
    is_test = index["split"] == TEST_SPLIT
    labels = index.loc[is_test, ["sample_id", *TEST_LABEL_COLUMNS]].reset_index(drop=True)
    for column in ("mask", "mask_2nd"):
        labels[column] = [None if pd.isna(p) else str(p).removeprefix(f"{TEST_LABELS_DIR}/") for p in labels[column]]
    labels.to_parquet(labels_root / "labels.parquet", index=False)
    public = index.astype({c: object for c in TEST_LABEL_COLUMNS})
    public.loc[is_test, list(TEST_LABEL_COLUMNS)] = None
    public.to_parquet(root / "index.parquet", index=False)
    for split in SPLITS:
        folder = labels_root if split == TEST_SPLIT else root
        write_annotations(folder / "annotations" / f"{split}.json", entries[split])
    stats = {split: tally.stats() for split, tally in tallies.items()}
    test_stats = stats[TEST_SPLIT]
    stats[TEST_SPLIT] = test_stats.model_copy(update={"vessel_fraction_fov": None, "all_background_accuracy_fov": None})
    (root / "stats.json").write_text(json.dumps({s: st.model_dump() for s, st in stats.items()}, indent=2) + "\n")
    (labels_root / "stats.json").write_text(json.dumps({TEST_SPLIT: test_stats.model_dump()}, indent=2) + "\n")
    (labels_root / "fingerprint.json").write_text(json.dumps({"fingerprint": fingerprint}, indent=2) + "\n")
    record = {"fingerprint": fingerprint, "config": cfg.model_dump(mode="json"), "n_images": len(index)}
    (root / "fingerprint.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return DatasetSummary(
        layout=layout, n_images=len(index), splits=stats, test_labels=test_stats, fingerprint=fingerprint
    )


class _Tally:
    """Pixel counts of one split, pooled over its images (a micro average, as accuracy is computed)."""

    def __init__(self) -> None:
        self.n_images = 0
        self.vessel_pixels = 0
        self.fov_pixels = 0
        self.fov_sources: set[FovSource] = set()

    def add(self, sample: LoadedSample) -> None:
        self.n_images += 1
        self.vessel_pixels += int((sample.mask & sample.fov).sum())
        self.fov_pixels += int(sample.fov.sum())
        self.fov_sources.add(sample.fov_source)

    def stats(self) -> SplitStats:
        if self.n_images == 0:
            return SplitStats(n_images=0, vessel_fraction_fov=None, all_background_accuracy_fov=None, fov_source=None)
        fraction = self.vessel_pixels / self.fov_pixels
        source = next(iter(self.fov_sources)) if len(self.fov_sources) == 1 else "mixed"
        return SplitStats(
            n_images=self.n_images,
            vessel_fraction_fov=fraction,
            all_background_accuracy_fov=1.0 - fraction,
            fov_source=source,
        )


def dataset_fingerprint(index: pd.DataFrame, cfg: DataPrepConfig) -> str:
    """sha256 of the samples' ids, splits and pixel hashes, and of the settings that shape the output."""
    digest = hashlib.sha256(b"vesselseg-prepared-dataset/1\n")
    columns = ["sample_id", "split", "image_sha256", "mask_sha256", "fov_sha256", "mask_2nd_sha256"]
    for values in index.sort_values("sample_id")[columns].itertuples(index=False):
        digest.update(("\t".join("-" if v is None else str(v) for v in values) + "\n").encode())
    settings = cfg.model_dump(mode="json", exclude={"limits"})  # they refuse inputs, never change the output
    if cfg.source != SYNTHETIC:
        settings["source"] = "<folder>"
        del settings["synthetic"]
    digest.update(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def _with_progress(ids: list[str], load: SampleLoader) -> Iterator[LoadedSample]:
    every = max(1, len(ids) // 10)
    for done, sample_id in enumerate(ids, start=1):
        yield load(sample_id)
        if done % every == 0 or done == len(ids):
            log.info("data-prep: %d/%d images", done, len(ids))


def _write_sample(sample: LoadedSample, split: Split, root: Path) -> dict[str, object]:
    """Write one sample's PNGs; returns its index row."""
    sid = sample.sample_id
    labels = f"{TEST_LABELS_DIR}/" if split == TEST_SPLIT else ""
    paths = {"image": f"images/{sid}.png", "mask": f"{labels}masks/{sid}.png", "fov": f"fov/{sid}.png"}
    Image.fromarray(sample.image).save(root / paths["image"])
    _save_mask(sample.mask, root / paths["mask"])
    _save_mask(sample.fov, root / paths["fov"])
    mask_2nd = None
    if sample.mask_2nd is not None:
        mask_2nd = f"{labels}masks_2nd/{sid}.png"
        (root / labels / "masks_2nd").mkdir(exist_ok=True)
        _save_mask(sample.mask_2nd, root / mask_2nd)
    height, width = sample.mask.shape
    return {
        "sample_id": sid,
        "split": split,
        **paths,
        "mask_2nd": mask_2nd,
        "height": height,
        "width": width,
        "image_sha256": pixel_sha256(sample.image),
        "mask_sha256": pixel_sha256(sample.mask),
        "fov_sha256": pixel_sha256(sample.fov),
        "mask_2nd_sha256": None if sample.mask_2nd is None else pixel_sha256(sample.mask_2nd),
        "fov_derived": sample.fov_source == "derived",
        "fov_source": sample.fov_source,
        "source_image": sample.source_image,
        "source_mask": sample.source_mask,
        "vessel_fraction_fov": float((sample.mask & sample.fov).sum() / sample.fov.sum()),
    }


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)

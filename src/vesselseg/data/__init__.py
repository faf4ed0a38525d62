"""Datasets: synthetic fundus generation, readers for published layouts, checks, splits, preparation."""

from vesselseg.data.annotations import annotation_entry, decode_rle, encode_rle, read_annotations, write_annotations
from vesselseg.data.dataset import PreparedDataset
from vesselseg.data.fov import derive_fov
from vesselseg.data.layouts import (
    Layout,
    LayoutChoice,
    detect_layout,
    read_chase_db1,
    read_drive,
    read_generic,
    read_hrf,
    read_layout,
    read_stare,
)
from vesselseg.data.loading import binarize_mask, load_sample, read_image, read_mask
from vesselseg.data.prepare import DataPrepConfig, DatasetSummary, SplitStats, dataset_fingerprint, prepare_dataset
from vesselseg.data.samples import SPLITS, FovSource, LoadedSample, OfficialSplit, RawSample, Split
from vesselseg.data.split import ContentRecord, LeakageGuard, SplitConfig, assign_splits, pixel_sha256
from vesselseg.data.synthetic import SyntheticConfig, SyntheticFundus, generate_fundus

__all__ = [
    "SPLITS",
    "ContentRecord",
    "DataPrepConfig",
    "DatasetSummary",
    "FovSource",
    "Layout",
    "LayoutChoice",
    "LeakageGuard",
    "LoadedSample",
    "OfficialSplit",
    "PreparedDataset",
    "RawSample",
    "Split",
    "SplitConfig",
    "SplitStats",
    "SyntheticConfig",
    "SyntheticFundus",
    "annotation_entry",
    "assign_splits",
    "binarize_mask",
    "dataset_fingerprint",
    "decode_rle",
    "derive_fov",
    "detect_layout",
    "encode_rle",
    "generate_fundus",
    "load_sample",
    "pixel_sha256",
    "prepare_dataset",
    "read_annotations",
    "read_chase_db1",
    "read_drive",
    "read_generic",
    "read_hrf",
    "read_image",
    "read_layout",
    "read_mask",
    "read_stare",
    "write_annotations",
]

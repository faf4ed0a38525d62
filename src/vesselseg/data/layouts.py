"""Readers for the published folder layouts of vessel datasets, and detection of which one a folder has.

A reader only finds files and pairs them; it opens nothing (see ``loading``). Files are matched by
name stem, case-insensitively and whatever the image extension, so a DRIVE copy whose GIFs were
converted to PNG still reads. Sample ids are the image stems (``21_training``, ``Image_01L``, ``im0001``).

Layouts (``root`` is the folder given as the source):

- ``drive``: ``training/`` and/or ``test/``, each with ``images/21_training.tif``,
  ``1st_manual/21_manual1.gif``, ``mask/21_training_mask.gif`` (FOV) and, for test,
  ``2nd_manual/01_manual2.gif``. The official split is train/test.
- ``chase_db1``: one flat folder of ``Image_01L.jpg`` + ``Image_01L_1stHO.png`` (+ ``_2ndHO.png``).
  No FOV masks: derived (``fov.derive_fov``).
- ``stare``: ``stare-images/im0001.ppm.gz``, ``labels-ah/im0001.ah.ppm.gz`` (+ ``labels-vk/`` as the
  second annotator). No FOV masks: derived. The STARE archive holds ~400 photographs of which only 20
  have vessel labels, so here the labels list the samples: an ``ah`` label without its photograph is an
  error, a photograph without labels is skipped (and counted in the log).
- ``hrf``: ``images/01_h.jpg`` (or ``.JPG``), ``manual1/01_h.tif``, ``mask/01_h_mask.tif`` (FOV).
- ``generic``: ``images/`` + ``masks/`` (+ optional ``fov/``), matched by stem, any format Pillow reads.

Wherever a layout has a FOV folder, every image must have its FOV mask there; without the folder the
FOV is derived for every image, so a dataset never mixes given and derived FOVs silently.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

from PIL import Image

from vesselseg.data.samples import OfficialSplit, RawSample
from vesselseg.errors import DataError

Layout = Literal["drive", "chase_db1", "stare", "hrf", "generic"]
LayoutChoice = Literal["auto", "drive", "chase_db1", "stare", "hrf", "generic"]  # one Literal: clear config errors

log = logging.getLogger(__name__)

_CHASE_IMAGE = re.compile(r"^image_\d+[lr]$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def detect_layout(root: Path) -> Layout:
    """Which published layout ``root`` holds; DataError naming the folder and what was looked for."""
    _require_folder(root)
    if any((root / part / "images").is_dir() for part in ("training", "test")):
        return "drive"
    if (root / "stare-images").is_dir() or (root / "labels-ah").is_dir():
        return "stare"
    if (root / "images").is_dir() and (root / "manual1").is_dir():
        return "hrf"
    if any(_CHASE_IMAGE.match(_stem(p).lower()) for p in _image_files(root)):
        return "chase_db1"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "generic"
    raise DataError(
        f"cannot tell the dataset layout of {root}: looked for training/images or test/images (DRIVE), "
        "stare-images/ or labels-ah/ (STARE), images/ + manual1/ (HRF), Image_01L.jpg-style files (CHASE_DB1) "
        "and images/ + masks/ (generic); set the layout explicitly or arrange the folder like one of these"
    )


def read_layout(root: Path, layout: LayoutChoice = "auto") -> list[RawSample]:
    """The samples of the dataset in ``root``, sorted by id, read with ``layout`` (or the detected one)."""
    chosen = detect_layout(root) if layout == "auto" else layout
    _require_folder(root)
    samples = READERS[chosen](root)
    if not samples:
        raise DataError(f"no images found in {root} (read as layout {chosen})")
    _check_unique_ids(samples)
    return sorted(samples, key=lambda s: s.sample_id)


def read_drive(root: Path) -> list[RawSample]:
    samples: list[RawSample] = []
    parts: tuple[tuple[str, OfficialSplit], ...] = (("training", "train"), ("test", "test"))
    for part, split in parts:
        folder = root / part
        if not (folder / "images").is_dir():
            continue
        manual1 = _by_stem(folder / "1st_manual")
        manual2 = _by_stem(folder / "2nd_manual")
        fovs = _by_stem(folder / "mask")
        for image in _image_files(folder / "images", required=True):
            stem = _stem(image)
            number = stem.split("_")[0]
            samples.append(
                RawSample(
                    sample_id=_safe_id(stem),
                    image=image,
                    mask=_match(manual1, f"{number}_manual1", image, folder / "1st_manual", "vessel mask"),
                    fov=_optional_folder_match(fovs, f"{stem}_mask", image, folder / "mask", "FOV mask"),
                    mask_2nd=_pick(manual2, f"{number}_manual2"),
                    official_split=split,
                )
            )
    return samples


def read_chase_db1(root: Path) -> list[RawSample]:
    files = _by_stem(root)
    samples = []
    for image in _image_files(root):
        stem = _stem(image)
        if not _CHASE_IMAGE.match(stem.lower()):
            continue
        samples.append(
            RawSample(
                sample_id=_safe_id(stem),
                image=image,
                mask=_match(files, f"{stem}_1stHO", image, root, "vessel mask (_1stHO)"),
                mask_2nd=_pick(files, f"{stem}_2ndHO"),
            )
        )
    return samples


def read_stare(root: Path) -> list[RawSample]:
    images = _by_stem(root / "stare-images")
    second = _by_stem(root / "labels-vk")
    samples = []
    for label in _image_files(root / "labels-ah", required=True):
        stem = _stem(label)
        if not stem.lower().endswith(".ah"):
            continue
        sample_id = stem[: -len(".ah")]
        image = _pick(images, sample_id)
        if image is None:
            raise DataError(f"STARE label {label} has no photograph {sample_id}.ppm.gz in {root / 'stare-images'}")
        samples.append(
            RawSample(
                sample_id=_safe_id(sample_id),
                image=image,
                mask=label,
                mask_2nd=_pick(second, f"{sample_id}.vk"),
            )
        )
    unlabelled = len(images) - len(samples)
    if unlabelled > 0:
        log.info("STARE: %d photographs in %s have no labels-ah label and are skipped", unlabelled, root)
    return samples


def read_hrf(root: Path) -> list[RawSample]:
    manual = _by_stem(root / "manual1")
    fovs = _by_stem(root / "mask")
    samples = []
    for image in _image_files(root / "images", required=True):
        stem = _stem(image)
        samples.append(
            RawSample(
                sample_id=_safe_id(stem),
                image=image,
                mask=_match(manual, stem, image, root / "manual1", "vessel mask"),
                fov=_optional_folder_match(fovs, f"{stem}_mask", image, root / "mask", "FOV mask"),
            )
        )
    return samples


def read_generic(root: Path) -> list[RawSample]:
    masks = _by_stem(root / "masks")
    fovs = _by_stem(root / "fov")
    samples = []
    for image in _image_files(root / "images", required=True):
        stem = _stem(image)
        samples.append(
            RawSample(
                sample_id=_safe_id(stem),
                image=image,
                mask=_match(masks, stem, image, root / "masks", "mask"),
                fov=_optional_folder_match(fovs, stem, image, root / "fov", "FOV mask"),
            )
        )
    return samples


READERS = {
    "drive": read_drive,
    "chase_db1": read_chase_db1,
    "stare": read_stare,
    "hrf": read_hrf,
    "generic": read_generic,
}


def _require_folder(root: Path) -> None:
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist or is not a folder")
    if not any(root.iterdir()):
        raise DataError(f"dataset folder {root} is empty")


def _image_extensions() -> frozenset[str]:
    Image.init()  # registers every format plugin, so the list is complete
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def _stem(path: Path) -> str:
    """Name without the image extension, and without ``.gz`` first: ``im0001.ah.ppm.gz`` -> ``im0001.ah``."""
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem


def _image_files(folder: Path, required: bool = False) -> list[Path]:
    """Image files directly in ``folder`` (not hidden, extension Pillow reads, optionally gzipped)."""
    if not folder.is_dir():
        if required:
            raise DataError(f"expected folder {folder} does not exist")
        return []
    extensions = _image_extensions()
    files = []
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        unzipped = name[:-3] if name.endswith(".gz") else name
        if path.is_file() and not name.startswith(".") and Path(unzipped).suffix in extensions:
            files.append(_utf8_named(path))
    if required and not files:
        raise DataError(f"no images found in {folder}")
    return files


def _utf8_named(path: Path) -> Path:
    """The path, if its name is text: sample ids and source paths end up in JSON and parquet, which hold UTF-8."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path.name)
        raise DataError(f"file name {raw!r} in {path.parent} is not valid UTF-8: rename the file") from None
    return path


def _by_stem(folder: Path) -> dict[str, list[Path]]:
    """Image files of ``folder`` grouped by lower-cased stem ({} when the folder does not exist)."""
    found: dict[str, list[Path]] = {}
    for path in _image_files(folder):
        found.setdefault(_stem(path).lower(), []).append(path)
    return found


def _pick(files: dict[str, list[Path]], stem: str) -> Path | None:
    matches = files.get(stem.lower(), [])
    if len(matches) > 1:
        raise DataError(f"ambiguous files for {stem}: {', '.join(str(m) for m in matches)}")
    return matches[0] if matches else None


def _match(files: dict[str, list[Path]], stem: str, image: Path, folder: Path, what: str) -> Path:
    found = _pick(files, stem)
    if found is None:
        raise DataError(f"image {image} has no {what}: expected {stem}.<ext> in {folder}")
    return found


def _optional_folder_match(
    files: dict[str, list[Path]], stem: str, image: Path, folder: Path, what: str
) -> Path | None:
    """The FOV file when the layout's FOV folder exists (then it is required), else None (derive it)."""
    if not folder.is_dir():
        return None
    return _match(files, stem, image, folder, what)


def _safe_id(stem: str) -> str:
    """Sample ids become file names in the prepared dataset, so keep them to portable characters."""
    return _UNSAFE_ID_CHARS.sub("_", stem)


def _check_unique_ids(samples: list[RawSample]) -> None:
    seen: dict[str, RawSample] = {}
    for sample in samples:
        other = seen.setdefault(sample.sample_id, sample)
        if other is not sample:
            raise DataError(f"images {other.image} and {sample.image} would both get sample id {sample.sample_id!r}")

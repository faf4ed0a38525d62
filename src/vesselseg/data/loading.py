"""Reading images and masks from disk into checked arrays.

The rules every later stage relies on:

- Images become uint8 RGB: palette, greyscale, RGBA and CMYK files are converted; 16-bit files whose
  values exceed 255 are scaled to 8 bits (divided by 257).
- Masks (vessel labels and FOV masks alike) are binarised explicitly: **a pixel is foreground when its
  value is >= 128 of 255**. Colour masks count a pixel as foreground when any of R, G, B is >= 128.
  A mask whose values are all 0 or 1 is read as a 0/1 label image (1 = foreground): read with the
  128 rule it would be silently empty.
- A mask is **non-binary**, and refused, when more than 2 % of its pixels lie strictly between 32 and
  223: the threshold would then be deciding the labels rather than reading them. A few intermediate
  values (JPEG-like edges, as in CHASE_DB1's labels) stay below that and are binarised.
- Image, mask, second mask and FOV must have the same size; nothing is ever resized here. (Where a
  later stage must resize a mask, it uses nearest neighbour only.)
- Files may be gzip-compressed (``.gz``, as STARE ships them).
- Nothing is decoded past `ReadLimits`: a ``.gz`` file is unpacked as a stream and refused once it passes
  ``max_decompressed_mib``, and an image whose header claims more than ``max_pixels`` pixels is refused before
  its pixels are decoded (Pillow's own limit only warns up to twice its default of about 89 megapixels).
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import ConfigDict, Field

from vesselseg.config import ConfigModel
from vesselseg.data.fov import derive_fov
from vesselseg.data.samples import LoadedSample, RawSample
from vesselseg.errors import DataError

_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
NON_BINARY_BAND = (32, 223)  # values strictly inside this band are "intermediate"
NON_BINARY_MAX_FRACTION = 0.02
MIB = 1 << 20


class ReadLimits(ConfigModel):
    """How much one input file may unpack to; the largest public fundus sets (HRF: 3504x2336) need a fraction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pixels: int = Field(
        64_000_000,
        ge=1,
        le=Image.MAX_IMAGE_PIXELS,
        description="width x height of one image or mask; above Pillow's own limit its bomb check would refuse first",
    )
    max_decompressed_mib: int = Field(1024, ge=1, description="what one .gz file may unpack to")


DEFAULT_LIMITS = ReadLimits()


def read_image(path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of an image file."""
    with _open(path, "image", limits) as img:
        if img.mode in _SIXTEEN_BIT_MODES:
            grey = _eight_bit(np.asarray(img))
            return np.repeat(grey[..., None], 3, axis=2)
        return np.asarray(img.convert("RGB"))


def read_mask(path: Path, what: str = "mask", limits: ReadLimits = DEFAULT_LIMITS) -> np.ndarray:
    """bool (H, W) foreground of a mask file, by the rules in this module's docstring."""
    with _open(path, what, limits) as img:
        if img.mode in _SIXTEEN_BIT_MODES:
            values = _eight_bit(np.asarray(img))
        elif img.mode in ("1", "L"):
            values = np.asarray(img.convert("L"))
        elif img.mode in ("LA", "La"):
            values = np.asarray(img.getchannel("L"))
        else:
            values = np.asarray(img.convert("RGB")).max(axis=2)
    return binarize_mask(values, path, what)


def binarize_mask(values: np.ndarray, path: Path | str, what: str = "mask") -> np.ndarray:
    """Foreground of 8-bit mask values: >= 128, or == 1 for 0/1 label images; refuses non-binary masks."""
    if values.size and int(values.max()) <= 1:
        return values == 1
    low, high = NON_BINARY_BAND
    between = float(((values > low) & (values < high)).mean()) if values.size else 0.0
    if between > NON_BINARY_MAX_FRACTION:
        raise DataError(
            f"non-binary {what} {path}: {between:.1%} of its pixels lie strictly between {low} and {high} "
            f"(at most {NON_BINARY_MAX_FRACTION:.0%} allowed); is it a probability map or a photograph?"
        )
    return values >= 128


def load_sample(raw: RawSample, root: Path, limits: ReadLimits = DEFAULT_LIMITS) -> LoadedSample:
    """Read and check one sample's files; ``root`` is the dataset folder, for the recorded source paths."""
    image = read_image(raw.image, limits)
    mask = read_mask(raw.mask, limits=limits)
    _check_size(raw.image, image, raw.mask, mask, "mask")
    mask_2nd = None
    if raw.mask_2nd is not None:
        mask_2nd = read_mask(raw.mask_2nd, "second annotator's mask", limits)
        _check_size(raw.image, image, raw.mask_2nd, mask_2nd, "second annotator's mask")
    if raw.fov is None:
        fov = derive_fov(image, str(raw.image))
    else:
        fov = read_mask(raw.fov, "FOV mask", limits)
        _check_size(raw.image, image, raw.fov, fov, "FOV mask")
        if not fov.any():
            raise DataError(f"FOV mask {raw.fov} is empty: no pixel of it is >= 128")
    return LoadedSample(
        sample_id=raw.sample_id,
        image=image,
        mask=mask,
        fov=fov,
        fov_source="derived" if raw.fov is None else "given",
        mask_2nd=mask_2nd,
        official_split=raw.official_split,
        source_image=_relative(raw.image, root),
        source_mask=_relative(raw.mask, root),
    )


def _open(path: Path, what: str, limits: ReadLimits) -> Image.Image:
    """The decoded image in ``path``; any failure to find, unpack or decode it names the file."""
    try:
        data = _gunzip(path, what, limits) if path.suffix.lower() == ".gz" else path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        if img.width * img.height > limits.max_pixels:
            raise DataError(
                f"{what} {path} is {img.width}x{img.height} = {img.width * img.height:,} pixels, above the limit "
                f"of {limits.max_pixels:,} (data.limits.max_pixels): refusing to decode it"
            )
        img.load()  # decode now: a truncated file fails here, not later in some other stage
        return img
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{what} {path} is too large to decode safely: {exc} (limit data.limits.max_pixels={limits.max_pixels:,})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {what} {path}: {exc}") from exc


def _gunzip(path: Path, what: str, limits: ReadLimits) -> bytes:
    """The unpacked bytes of a .gz file, read as a stream that stops one byte past the limit."""
    cap = limits.max_decompressed_mib * MIB
    with gzip.open(path, "rb") as stream:
        data = stream.read(cap + 1)
    if len(data) > cap:
        raise DataError(
            f"{what} {path} unpacks to more than {limits.max_decompressed_mib} MiB "
            "(data.limits.max_decompressed_mib): refusing it (decompression bomb?)"
        )
    return data


def _eight_bit(values: np.ndarray) -> np.ndarray:
    if values.size and int(values.max()) > 255:
        values = values / 257.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _check_size(image_path: Path, image: np.ndarray, other_path: Path, other: np.ndarray, what: str) -> None:
    if image.shape[:2] != other.shape[:2]:
        (h, w), (oh, ow) = image.shape[:2], other.shape[:2]
        raise DataError(f"size mismatch: image {image_path} is {w}x{h} but {what} {other_path} is {ow}x{oh}")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()

"""Procedural synthetic fundus photographs with exact vessel masks: the project's default dataset.

Each image is built in two steps. First a vessel tree is grown from the optic disc by a stochastic
branching walk (arcades that bend around the macula, nasal and macular branches, side branches whose
widths follow Murray's law, widths tapering to about one pixel) and rasterised into a set of pixels:
that set, cut to the circular field of view, IS the mask. Then the photograph is rendered from the mask:
a reddish textured background with vignetting and an illumination gradient is darkened exactly on the
mask's pixels, and only then is the whole picture blurred and given noise, as a camera would. No step
can move a label away from the pixels that were darkened, so the labels are exact.

Geometry is grown in a 512-px reference frame and scaled to the requested size, so "8 px to 1 px" widths
hold at 512 px and scale with the size; a vessel thinner than half a pixel at the output size is not
drawn (it would not be visible there). Image ``i`` of seed ``s`` depends only on ``(s, i, size)``: changing
``count`` adds or drops images without changing the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from pydantic import ConfigDict, Field
from scipy import ndimage

from vesselseg.config import ConfigModel

REFERENCE_SIZE = 512
_STEP = 2.0  # growth step in reference pixels
_MIN_WIDTH = 0.6  # a vessel ends when it tapers below this (reference pixels)
# Linear taper, 1 px per 100 px of length: it ends a thin branch after a few tens of pixels, where a
# proportional taper would let 1-px vessels run on across the whole retina.
_TAPER_PER_PX = 1.0 / 100.0
_MAX_VESSELS = 4000  # bound on branches per image, so a pathological seed cannot run away


class SyntheticConfig(ConfigModel):
    """How many synthetic images to make, at which square size, from which seed."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(30, ge=1, le=100_000)
    size: int = Field(512, ge=64, le=8192)
    seed: int = Field(0, ge=0)


@dataclass(frozen=True)
class SyntheticFundus:
    image: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # bool (H, W): vessel pixels, all inside the FOV
    fov: np.ndarray  # bool (H, W): the circular field of view


@dataclass(frozen=True)
class _Anatomy:
    centre: np.ndarray  # FOV centre (x, y), reference pixels
    radius: float  # FOV radius
    disc: np.ndarray  # optic disc centre
    disc_radius: float
    fovea: np.ndarray
    side: int  # +1 when the disc lies right of the centre, so the temporal side (macula) is left


@dataclass
class _Vessel:
    x: float
    y: float
    heading: float  # radians, image coordinates (y down)
    target: float  # heading the vessel is steered back to
    gain: float  # steering strength per reference pixel
    width: float
    contrast: float  # fraction of the background removed on this vessel's pixels
    points: list[tuple[float, float]] = field(default_factory=list)
    widths: list[float] = field(default_factory=list)


def generate_fundus(size: int, seed: int, index: int = 0) -> SyntheticFundus:
    """One synthetic fundus image of ``size`` x ``size`` pixels, identical for identical arguments."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    anatomy = _anatomy(rng)
    vessels = _grow_tree(anatomy, rng)
    darkening = _rasterise(vessels, size)
    fov = _fov_disk(anatomy, size)
    mask = (darkening > 0) & fov
    image = _render(anatomy, np.where(mask, darkening, 0), fov, size, rng)
    return SyntheticFundus(image=image, mask=mask, fov=fov)


def _anatomy(rng: np.random.Generator) -> _Anatomy:
    ref = REFERENCE_SIZE
    centre = ref / 2 + rng.normal(0.0, 3.0, 2)
    radius = rng.uniform(0.45, 0.48) * ref
    side = int(rng.choice([-1, 1]))
    disc = centre + np.array([side * rng.uniform(0.22, 0.28) * ref, rng.normal(0.0, 0.02 * ref)])
    fovea = disc + np.array([-side * rng.uniform(0.27, 0.31) * ref, rng.uniform(0.0, 0.03) * ref])
    return _Anatomy(centre, radius, disc, rng.uniform(0.06, 0.075) * ref, fovea, side)


def _roots(a: _Anatomy, rng: np.random.Generator) -> list[_Vessel]:
    """The vessels leaving the disc: four arcade and four nasal trunks (vein + artery each), macular twigs."""
    roots: list[_Vessel] = []

    def add(heading: float, target: float, gain: float, width: float, contrast: float) -> None:
        start = a.disc + 0.25 * a.disc_radius * np.array([math.cos(heading), math.sin(heading)])
        roots.append(_Vessel(float(start[0]), float(start[1]), heading, target, gain, width, contrast))

    for vertical in (-1, 1):
        towards_temporal = -a.side
        for width, contrast in ((rng.uniform(7.0, 8.5), 0.62), (rng.uniform(5.0, 6.5), 0.5)):
            # Arcades leave the disc almost vertically and bend round the macula towards the temporal side.
            heading = math.atan2(vertical, towards_temporal * rng.uniform(0.2, 0.6))
            target = math.atan2(vertical * rng.uniform(0.15, 0.35), towards_temporal)
            add(heading, target, rng.uniform(1 / 150, 1 / 90), width, contrast)
            heading = math.atan2(vertical * rng.uniform(0.4, 1.0), -towards_temporal)
            add(heading, heading, 1 / 200, width * rng.uniform(0.55, 0.7), contrast)
    to_fovea = math.atan2(*(a.fovea - a.disc)[::-1])
    for _ in range(int(rng.integers(2, 5))):
        heading = to_fovea + rng.uniform(-0.45, 0.45)
        add(heading, heading, 1 / 150, rng.uniform(2.0, 3.2), 0.45)
    return roots


def _grow_tree(a: _Anatomy, rng: np.random.Generator) -> list[_Vessel]:
    pending = _roots(a, rng)
    done: list[_Vessel] = []
    faz = 0.035 * REFERENCE_SIZE  # foveal avascular zone radius
    max_steps = int(2 * math.pi * a.radius / _STEP)
    while pending and len(done) < _MAX_VESSELS:
        v = pending.pop()
        done.append(v)
        for _ in range(max_steps):
            v.points.append((v.x, v.y))
            v.widths.append(v.width)
            if v.width < _MIN_WIDTH:
                break
            if math.hypot(v.x - a.centre[0], v.y - a.centre[1]) > a.radius + 2:
                break
            if math.hypot(v.x - a.fovea[0], v.y - a.fovea[1]) < faz:
                break
            turn = _wrap(v.target - v.heading) * v.gain * _STEP
            # Thin vessels wander more than trunks do.
            wander = rng.normal(0.0, 0.05 + 0.12 / (1.0 + v.width))
            v.heading += turn + wander
            v.x += _STEP * math.cos(v.heading)
            v.y += _STEP * math.sin(v.heading)
            v.width -= _STEP * _TAPER_PER_PX
            # A branch every 9 + 3w px on average: trunks branch every ~30 px, small vessels more often.
            if v.width > 1.3 and rng.random() < _STEP / (9.0 + 3.0 * v.width):
                pending.append(_branch(v, rng))
    return done


def _branch(parent: _Vessel, rng: np.random.Generator) -> _Vessel:
    # Mostly thin side branches, now and then a fork into two similar vessels.
    ratio = rng.uniform(0.6, 0.85) if rng.random() < 0.15 else rng.uniform(0.2, 0.6)
    child_width = max(ratio * parent.width, 0.8)
    # Murray's law: the cubes of the daughters' radii add up to the cube of the parent's.
    parent.width = max(parent.width**3 - child_width**3, _MIN_WIDTH**3) ** (1 / 3)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    heading = parent.heading + direction * rng.uniform(0.6, 1.3)
    parent.heading -= direction * 0.25 * ratio
    return _Vessel(parent.x, parent.y, heading, heading, 1 / 100, child_width, parent.contrast * rng.uniform(0.85, 1.0))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _rasterise(vessels: list[_Vessel], size: int) -> np.ndarray:
    """uint8 darkening per pixel (0 = no vessel); its non-zero set is the vessel mask.

    Runs are drawn thinnest first so that a trunk, drawn last, keeps its own darkening where a branch
    leaves it. PIL draws hard-edged (aliased) lines, so the drawn set and the label are one and the same.
    """
    scale = size / REFERENCE_SIZE
    runs: list[tuple[int, int, list[tuple[float, float]]]] = []
    for v in vessels:
        points = np.asarray(v.points) * scale
        widths = np.asarray(v.widths) * scale
        visible = int(np.argmax(widths < 0.5)) if (widths < 0.5).any() else len(widths)
        if visible < 2:
            continue
        pixels = np.maximum(1, np.rint(widths[:visible])).astype(int)
        level = int(np.clip(round(255 * min(0.9, v.contrast + 0.03 * v.widths[0])), 1, 255))
        start = 0
        for i in range(1, visible + 1):
            if i == visible or pixels[i] != pixels[start]:
                end = min(i + 1, visible)  # overlap one point so consecutive runs join
                if end - start >= 2:
                    runs.append((int(pixels[start]), level, [tuple(p) for p in points[start:end]]))
                start = i
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for width, level, line in sorted(runs, key=lambda r: r[0]):
        draw.line(line, fill=level, width=width, joint="curve" if width >= 3 else None)
    return np.asarray(canvas)


def _fov_disk(a: _Anatomy, size: int) -> np.ndarray:
    scale = size / REFERENCE_SIZE
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = a.centre * scale
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= (a.radius * scale) ** 2


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean noise varying over about size/cells pixels (bicubic upsampling of a small grid)."""
    grid = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def _render(a: _Anatomy, darkening: np.ndarray, fov: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    scale = size / REFERENCE_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / scale
    r = np.hypot(xx - a.centre[0], yy - a.centre[1]) / a.radius
    light = 1.0 - 0.35 * np.clip(r, 0, 1) ** 3  # vignetting
    angle = rng.uniform(0, 2 * math.pi)
    gradient = ((xx - a.centre[0]) * math.cos(angle) + (yy - a.centre[1]) * math.sin(angle)) / a.radius
    light *= 1.0 + rng.uniform(0.05, 0.2) * gradient
    light *= 1.0 + 0.07 * _smooth_noise(rng, size, 8) + 0.04 * _smooth_noise(rng, size, 40)
    d_disc = np.hypot(xx - a.disc[0], yy - a.disc[1]) / a.disc_radius
    disc = np.exp(-(d_disc**4))
    d_fovea = np.hypot(xx - a.fovea[0], yy - a.fovea[1]) / (1.6 * a.disc_radius)
    light *= (1.0 + 0.55 * disc) * (1.0 - 0.3 * np.exp(-(d_fovea**2)))

    base = np.array([0.78, 0.36, 0.16], np.float32) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    colour = base + disc[..., None] * np.array([0.1, 0.25, 0.12], np.float32)  # the disc is yellowish
    image = light[..., None] * colour
    # Blood absorbs green and blue far more than red: vessels look dark red.
    strength = (darkening.astype(np.float32) / 255.0)[..., None] * np.array([0.45, 1.0, 0.85], np.float32)
    image *= 1.0 - strength
    image *= fov[..., None]

    sigma = max(0.5, 0.8 * scale)
    image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))
    image += rng.normal(0.0, 0.012, image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0) * fov[..., None]
    return np.rint(image * 255).astype(np.uint8)

"""Per-image panels drawn with Pillow: five views of one prediction at full size, their zoom, a legend.

```
 image · predictor                                              Dice · threshold
 Input   | Ground truth | Prediction | Errors inside FOV | Probability      (full size)
 the same five views of the thin-vessel window, enlarged by an integer factor   (zoom)
                          TP / FP / FN swatches with counts | heat-map scale with the threshold
```
The zoom is enlarged with nearest-neighbour sampling, so each pixel stays one crisp square and a
one-pixel vessel is as wide on screen as the factor. The zoom frame is drawn on the input view only:
the error view stays exactly the error overlay.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from vesselseg.metrics.levels import ProbabilityMap, threshold_of
from vesselseg.visualize.colours import ERROR_COLOURS, ERROR_LABELS, heat_lut
from vesselseg.visualize.overlay import heat_map, mask_image

BACKGROUND = (22, 24, 29)
TEXT = (236, 238, 242)
MUTED = (150, 156, 168)
FRAME = (255, 200, 0)


@dataclass(frozen=True)
class Window:
    top: int
    left: int
    side: int


@dataclass(frozen=True)
class PanelText:
    title: str  # left of the header: image and predictor
    detail: str  # right of the header: Dice, threshold
    counts: dict[str, int]  # tp / fp / fn, printed in the legend


@cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    # DejaVu ships with matplotlib, so panels look the same on every machine the report is built on.
    properties = font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    path = font_manager.findfont(properties)
    return ImageFont.truetype(path, size)


def prediction_panel(
    image: np.ndarray,
    prob: ProbabilityMap,
    truth: np.ndarray,
    fov: np.ndarray | None,
    overlay: np.ndarray,
    level: int,
    window: Window,
    text: PanelText,
    max_side: int,
) -> Image.Image:
    height, width = prob.shape
    views = [
        ("Input", image),
        ("Ground truth", mask_image(truth, fov)),
        (f"Prediction (p ≥ {threshold_of(level):.3f})", mask_image(prob.mask_at(level), fov)),
        ("Errors inside the FOV", overlay),
        ("Probability", heat_map(prob)),
    ]
    scale = min(1.0, max_side / max(height, width))
    tile_w, tile_h = max(1, round(width * scale)), max(1, round(height * scale))
    factor = max(1, tile_w // window.side)
    zoom_side = window.side * factor
    size = int(np.clip(tile_w / 18, 13, 48))  # readable when the browser fits the wide panel to the page
    gap = size
    header_h, caption_h, legend_h = int(size * 2.4), int(size * 1.8), int(size * 4.2)
    canvas_w = 5 * tile_w + 6 * gap
    canvas_h = header_h + 2 * caption_h + tile_h + zoom_side + legend_h + gap
    canvas = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    draw.text((gap, header_h // 2), text.title, font=font(int(size * 1.15), bold=True), fill=TEXT, anchor="lm")
    draw.text((canvas_w - gap, header_h // 2), text.detail, font=font(size), fill=TEXT, anchor="rm")
    full_y = header_h + caption_h
    zoom_y = full_y + tile_h + caption_h
    crop = (window.left, window.top, window.left + window.side, window.top + window.side)
    for column, (name, view) in enumerate(views):
        x = gap + column * (tile_w + gap)
        draw.text((x, full_y - caption_h // 2), name, font=font(size), fill=MUTED, anchor="lm")
        picture = Image.fromarray(view)
        full = picture if scale == 1.0 else picture.resize((tile_w, tile_h), Image.Resampling.BOX)
        canvas.paste(full, (x, full_y))
        zoom = picture.crop(crop).resize((zoom_side, zoom_side), Image.Resampling.NEAREST)
        canvas.paste(zoom, (x + (tile_w - zoom_side) // 2, zoom_y))
    frame = [gap + crop[0] * scale, full_y + crop[1] * scale, gap + crop[2] * scale, full_y + crop[3] * scale]
    draw.rectangle(frame, outline=FRAME, width=max(2, size // 8))
    draw.text(
        (gap, zoom_y - caption_h // 2),
        f"Zoom ×{factor}: the {window.side} × {window.side} px window with the most thin-vessel centreline "
        "(framed on the input)",
        font=font(size),
        fill=MUTED,
        anchor="lm",
    )
    legend_y = zoom_y + zoom_side + gap
    scale_x = gap + 4 * (tile_w + gap)
    # Under the error view when the labels fit there, otherwise shifted left so they end before the scale.
    errors_x = min(gap + 3 * (tile_w + gap), scale_x - gap - _error_legend_width(text.counts, size))
    _error_legend(draw, text.counts, x=errors_x, y=legend_y, size=size)
    _heat_scale(canvas, draw, level, x=scale_x, y=legend_y, width=int(tile_w * 0.9), size=size)
    return canvas


def _error_labels(counts: dict[str, int]) -> dict[str, str]:
    return {key: f"{ERROR_LABELS[key]}  {counts[key]:,} px" for key in ERROR_COLOURS}


def _error_legend_width(counts: dict[str, int], size: int) -> int:
    longest = max(font(int(size * 0.9)).getlength(label) for label in _error_labels(counts).values())
    return int(size * 1.5 + longest)


def _error_legend(draw: ImageDraw.ImageDraw, counts: dict[str, int], x: int, y: int, size: int) -> None:
    for row, (key, label) in enumerate(_error_labels(counts).items()):
        top = y + row * int(size * 1.35)
        draw.rectangle([x, top, x + size, top + size], fill=ERROR_COLOURS[key])
        draw.text((x + int(size * 1.5), top + size // 2), label, font=font(int(size * 0.9)), fill=TEXT, anchor="lm")


def _heat_scale(
    canvas: Image.Image, draw: ImageDraw.ImageDraw, level: int, x: int, y: int, width: int, size: int
) -> None:
    """The heat-map colours from p = 0 to 1, with the decision threshold marked above them."""
    small = font(int(size * 0.85))
    label = f"threshold {threshold_of(level):.3f}"
    tick = x + round(threshold_of(level) * width)
    half = small.getlength(label) / 2
    draw.text((min(max(tick, x + half), x + width - half), y), label, font=small, fill=TEXT, anchor="mt")
    bar_y = y + int(size * 1.4)
    ramp = np.broadcast_to(heat_lut()[None], (size, 256, 3))
    canvas.paste(Image.fromarray(np.ascontiguousarray(ramp)).resize((width, size)), (x, bar_y))
    draw.line([tick, bar_y - size // 3, tick, bar_y + size + size // 3], fill=TEXT, width=max(2, size // 8))
    draw.text((x, bar_y + size + size // 2), "p = 0", font=small, fill=MUTED, anchor="lt")
    draw.text((x + width, bar_y + size + size // 2), "1", font=small, fill=MUTED, anchor="rt")


def thumbnail(view: np.ndarray, width: int) -> Image.Image:
    """A view shrunk to ``width`` px by area averaging, so thin vessels fade rather than vanish.

    Returned with a 64-colour palette: a quarter of the bytes of RGB for a hundred gallery images
    embedded in one page, and no visible loss at this size.
    """
    height = max(1, round(view.shape[0] * width / view.shape[1]))
    small = Image.fromarray(view).resize((width, height), Image.Resampling.BOX)
    return small.quantize(colors=64, method=Image.Quantize.FASTOCTREE)

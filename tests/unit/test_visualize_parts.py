"""The report's parts on hand-made arrays: widths, zoom window, error overlay, panels, training log, config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from vesselseg.errors import DataError
from vesselseg.metrics import ProbabilityMap, confusion, image_counts
from vesselseg.visualize import ERROR_COLOURS, ReportConfig, error_overlay
from vesselseg.visualize.inputs import read_train_log
from vesselseg.visualize.panels import PanelText, Window, prediction_panel, thumbnail
from vesselseg.visualize.vessels import bucket_labels, densest_window, vessel_widths, width_confusion

EDGES = [2.5, 4.5, 6.5]


def line_and_bar() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A one-pixel line (row 10) and a seven-pixel bar (rows 30-36) across a 48 x 64 image."""
    truth = np.zeros((48, 64), bool)
    line, bar = np.zeros_like(truth), np.zeros_like(truth)
    line[10, 4:60] = True
    bar[30:37, 4:60] = True
    return truth | line | bar, line, bar


def test_width_is_one_on_a_line_and_seven_on_a_seven_pixel_bar() -> None:
    truth, line, bar = line_and_bar()
    widths = vessel_widths(truth, None)
    assert np.allclose(widths.width[line], 1.0)
    # The ends of the skeleton are rounded off, so judge the bar away from them.
    assert np.allclose(widths.width[bar][:, None].reshape(7, -1)[:, 8:-8], 7.0)


def test_width_confusion_charges_each_pixel_to_its_vessels_width() -> None:
    truth, line, bar = line_and_bar()
    levels = np.where(bar, 255, 0).astype(np.uint8)
    levels[12, 30] = 255  # a false alarm two pixels from the line: charged to the thin bucket
    prob = ProbabilityMap(levels, "line and bar")
    counts = width_confusion(vessel_widths(truth, None), prob, truth, None, level=128, edges=EDGES)
    assert counts[0].tolist() == [0, 1, int(line.sum())]
    assert counts[1].tolist() == [0, 0, 0]
    # The skeleton's ends lie nearer the bar's edge, so the bar's last few columns read narrower.
    assert counts[2:, 0].sum() == bar.sum() and counts[3, 0] > 0.85 * bar.sum()
    assert counts[2:, 1:].sum() == 0


def test_width_confusion_ignores_pixels_outside_the_fov() -> None:
    truth, line, bar = line_and_bar()
    fov = np.ones_like(truth)
    fov[:, 32:] = False
    prob = ProbabilityMap(np.full(truth.shape, 255, np.uint8), "all vessel")
    counts = width_confusion(vessel_widths(truth, fov), prob, truth, fov, level=128, edges=EDGES)
    tp, fp, fn, _ = confusion(image_counts(prob, truth, fov), 128)
    assert counts.sum(axis=0).tolist() == [tp, fp, fn]


def test_bucket_labels_name_whole_pixel_widths() -> None:
    assert bucket_labels(EDGES) == ["1–2 px", "3–4 px", "5–6 px", "≥7 px"]
    assert bucket_labels([3.5]) == ["1–3 px", "≥4 px"]


def test_zoom_window_goes_where_thin_vessels_are_densest() -> None:
    truth = np.zeros((120, 160), bool)
    truth[10:40, 10:150] = True  # a thick vessel: much area, little thin centreline
    truth[70:118:4, 100:150] = True  # many one-pixel vessels in the lower right
    top, left = densest_window(vessel_widths(truth, None), side=40, thin_px=2.5)
    assert 70 - 40 < top and top + 40 <= 120 and 100 - 40 < left and left + 40 <= 160
    assert densest_window(vessel_widths(np.zeros((50, 60), bool), None), side=20, thin_px=2.5) == (15, 20)


@pytest.mark.parametrize("with_fov", [True, False])
def test_error_overlay_colours_are_the_confusion_even_on_an_image_of_those_colours(with_fov: bool) -> None:
    rng = np.random.default_rng(3)
    shape = (40, 50)
    truth = rng.random(shape) < 0.3
    levels = rng.integers(0, 256, shape).astype(np.uint8)
    levels[::3, ::3] = 100  # exactly the level: predicted vessel (>=), as in the metrics
    prob = ProbabilityMap(levels, "random")
    fov = np.ones(shape, bool) if with_fov else None
    if fov is not None:
        fov[:, :7] = False
    # A photograph made of the class colours themselves must not add to their counts.
    palette = np.array(list(ERROR_COLOURS.values()), np.uint8)
    image = palette[rng.integers(0, 3, shape)]
    overlay = error_overlay(image, prob, truth, fov, level=100)
    inside = overlay[fov] if fov is not None else overlay.reshape(-1, 3)
    counted = [int(np.all(inside == colour, axis=1).sum()) for colour in ERROR_COLOURS.values()]
    tp, fp, fn, _ = confusion(image_counts(prob, truth, fov), 100)
    assert counted == [tp, fp, fn]
    assert all(len(set(c)) > 1 for c in ERROR_COLOURS.values())  # no class colour is a grey
    others = overlay[~np.any([np.all(overlay == c, axis=2) for c in ERROR_COLOURS.values()], axis=0)]
    assert (others[:, 0] == others[:, 1]).all() and (others[:, 1] == others[:, 2]).all()


def test_error_overlay_refuses_a_mask_of_another_size() -> None:
    with pytest.raises(DataError, match="shape"):
        prob = ProbabilityMap(np.zeros((8, 8), np.uint8), "small")
        error_overlay(np.zeros((8, 8, 3), np.uint8), prob, np.zeros((8, 9), bool), None, 128)


def test_panel_and_thumbnail_sizes() -> None:
    rng = np.random.default_rng(0)
    height, width = 90, 70
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    prob = ProbabilityMap(rng.integers(0, 256, (height, width)).astype(np.uint8), "panel")
    truth = prob.levels > 200
    overlay = error_overlay(image, prob, truth, None, 128)
    text = PanelText("img · model", "Dice 0.5", {"tp": 1, "fp": 2, "fn": 3})
    panel = prediction_panel(image, prob, truth, None, overlay, 128, Window(70, 50, 20), text, max_side=1000)
    assert panel.width > 5 * width and panel.height > height + 3 * 20  # full row and a zoom enlarged x3
    shrunk = prediction_panel(image, prob, truth, None, overlay, 128, Window(0, 0, 20), text, max_side=45)
    assert shrunk.width < panel.width
    assert thumbnail(overlay, 35).size == (35, 45)


def test_training_log_keeps_numbers_and_leaves_unlogged_values_empty(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [
        {"step": 2, "loss": 0.5, "lr": 1e-4, "phase": "train"},
        {"step": 1, "loss": 0.9, "lr": 5e-5, "val_dice": 0.4},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    log = read_train_log(path)
    assert log["step"].tolist() == [1, 2]
    assert "phase" not in log.columns
    assert log["val_dice"].iloc[0] == 0.4 and np.isnan(log["val_dice"].iloc[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"step": 1, "loss": 1, "lr": 1}\n{"step": 2, "loss"\n', r"log\.jsonl:2 is not JSON"),
        ('{"step": 1, "loss": 1}\n', "at least step, loss, lr"),
        ('{"step": 1, "loss": "high", "lr": 1}\n', "loss must be numbers"),
        ("\n", "holds no steps"),
        ('{"step": 10, "val_dice": 0.5}\n', "holds no training steps, only validation lines"),
    ],
)
def test_training_log_errors_name_the_line_or_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_train_log(path)


def test_width_edges_must_increase() -> None:
    with pytest.raises(ValidationError):
        ReportConfig(width_edges_px=[4.5, 2.5])
    with pytest.raises(ValidationError):
        ReportConfig(width_edges_px=[])


def test_training_log_merges_validation_lines(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    rows = [
        {"step": 1, "loss": 2.0, "lr": 1e-3},
        {"step": 2, "loss": 1.5, "lr": 1e-3},
        {"step": 2, "val_dice": 0.4, "val_threshold": 0.5},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = read_train_log(log)
    assert list(table["step"]) == [1, 2]
    assert table.loc[table["step"] == 2, "val_dice"].item() == 0.4
    assert table.loc[table["step"] == 2, "loss"].item() == 1.5

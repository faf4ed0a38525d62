"""The report's plots, drawn with matplotlib's object API (no pyplot state, Agg canvas).

Each function takes plain arrays, writes one PNG and returns nothing; ``build`` decides what to draw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vesselseg.visualize.colours import BASELINE_COLOUR
from vesselseg.visualize.content import percent

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#555b66",
    "axes.labelcolor": "#2b2f36",
    "axes.grid": True,
    "grid.color": "#e3e6eb",
    "grid.linewidth": 0.8,
    "xtick.color": "#555b66",
    "ytick.color": "#555b66",
    "legend.frameon": False,
    "legend.fontsize": 9,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.15,
}


@dataclass(frozen=True)
class Curves:
    """One predictor's pooled curves and its operating point at the chosen threshold."""

    name: str
    colour: str
    calibrated: bool
    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    auc: float | None
    ap: float | None
    point: tuple[float, float, float]  # (fpr, recall, precision)


@dataclass(frozen=True)
class DiceSpread:
    name: str
    colour: str
    values: np.ndarray  # per-image Dice
    mean: float
    ci: tuple[float | None, float | None]


@dataclass(frozen=True)
class WidthSeries:
    name: str
    colour: str
    recall: np.ndarray  # per bucket, NaN where the bucket has no vessel pixel
    dice: np.ndarray


@contextmanager
def _figure(path: Path, width: float, height: float, dpi: int) -> Iterator[Figure]:
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
        FigureCanvasAgg(figure)  # explicit: no display, no pyplot, whatever the default backend
        yield figure
        figure.savefig(path, dpi=dpi)


def _label(curves: Curves, key: str, value: float | None) -> str:
    if not curves.calibrated or value is None:
        return f"{curves.name}  ({key} n/a: not calibrated)"
    return f"{curves.name}  {key} {value:.3f}"


def roc_plot(sets: Sequence[Curves], baselines: dict[str, tuple[float, float]], path: Path, dpi: int) -> None:
    """ROC of every predictor on one axis, with an enlarged view of the low false-positive corner."""
    with _figure(path, 6.0, 5.2, dpi) as figure:
        ax = figure.subplots()
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color=BASELINE_COLOUR, label="chance")
        inset = ax.inset_axes([0.42, 0.1, 0.54, 0.5])
        for axis in (ax, inset):
            for c in sets:
                axis.plot(
                    c.fpr,
                    c.tpr,
                    color=c.colour,
                    lw=2,
                    ls="-" if c.calibrated else "--",
                    label=_label(c, "AUC", c.auc) if axis is ax else None,
                )
                axis.plot(c.point[0], c.point[1], "o", color=c.colour, ms=7, mec="white", mew=1.5, zorder=5)
        for name, (fpr, tpr) in baselines.items():
            ax.plot(fpr, tpr, "X", color=BASELINE_COLOUR, ms=9, zorder=6)
            ax.annotate(
                name.replace("_", " "),
                (fpr, tpr),
                xytext=(8 if fpr < 0.5 else -8, 8 if tpr < 0.5 else -14),
                textcoords="offset points",
                ha="left" if fpr < 0.5 else "right",
                color="#555b66",
                fontsize=8,
            )
        worst_fpr = max(c.point[0] for c in sets)
        lowest_tpr = min(c.point[1] for c in sets)
        inset.set_xlim(0, min(1.0, max(0.05, 2.5 * worst_fpr)))
        inset.set_ylim(max(0.0, lowest_tpr - 0.25), 1.0)
        inset.tick_params(labelsize=7)
        inset.set_facecolor("white")
        # Only the frame of the enlarged region: connector lines would cross the curves.
        ax.indicate_inset([0, inset.get_ylim()[0], inset.get_xlim()[1], 1 - inset.get_ylim()[0]], edgecolor="#8a909c")
        inset.set_title("enlarged", fontsize=8, loc="right", fontweight="normal", color="#8a909c")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false-positive rate (1 − specificity)",
            ylabel="true-positive rate (recall)",
            title="ROC, pooled test pixels inside the FOV",
        )
        ax.set_aspect("equal")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.13), ncols=1)


def pr_plot(
    sets: Sequence[Curves], vessel_fraction: float, baselines: dict[str, tuple[float, float]], path: Path, dpi: int
) -> None:
    """Precision-recall of every predictor on one axis, over faint lines of equal Dice."""
    with _figure(path, 6.0, 5.2, dpi) as figure:
        ax = figure.subplots()
        recall = np.linspace(0.01, 1, 200)
        for dice in (0.2, 0.4, 0.6, 0.8):
            precision = dice * recall / (2 * recall - dice)
            keep = (precision > 0) & (precision <= 1) & (recall >= dice / 2)
            ax.plot(recall[keep], precision[keep], color="#c9ced6", lw=0.8, zorder=1)
            ax.annotate(
                f"Dice {dice:.1f}",
                (recall[keep][-1], precision[keep][-1]),
                xytext=(-2, 3),
                textcoords="offset points",
                ha="right",
                fontsize=7,
                color="#9aa0aa",
            )
        chance = f"chance (vessel fraction {vessel_fraction:.3f})"
        ax.axhline(vessel_fraction, ls="--", lw=1, color=BASELINE_COLOUR, label=chance)
        for c in sets:
            ax.plot(
                c.recall,
                c.precision,
                color=c.colour,
                lw=2,
                ls="-" if c.calibrated else "--",
                label=_label(c, "AP", c.ap),
            )
            ax.plot(c.point[1], c.point[2], "o", color=c.colour, ms=7, mec="white", mew=1.5, zorder=5)
        for name, (rec, prec) in baselines.items():
            ax.plot(rec, prec, "X", color=BASELINE_COLOUR, ms=9, zorder=6)
            ax.annotate(
                name.replace("_", " "),
                (rec, prec),
                xytext=(-8, -6),
                textcoords="offset points",
                ha="right",
                va="top",
                color="#555b66",
                fontsize=8,
            )
        ax.set(
            xlim=(0, 1.01),
            ylim=(0, 1.01),
            xlabel="recall (sensitivity)",
            ylabel="precision",
            title="Precision–recall, pooled test pixels",
        )
        ax.set_aspect("equal")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.13), ncols=1)


def dice_plot(spreads: Sequence[DiceSpread], path: Path, dpi: int) -> None:
    """Per-image Dice per predictor: box, every image as a dot, mean with its bootstrap CI."""
    rng = np.random.default_rng(0)  # jitter only; fixed so that the same data draws the same picture
    with _figure(path, 7.5, 1.2 + 0.75 * len(spreads), dpi) as figure:
        ax = figure.subplots()
        rows = np.arange(len(spreads))[::-1]
        for row, spread in zip(rows, spreads):
            ax.boxplot(
                spread.values,
                positions=[row],
                orientation="horizontal",
                widths=0.55,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": spread.colour + "22", "edgecolor": spread.colour},
                medianprops={"color": spread.colour, "lw": 2},
                whiskerprops={"color": spread.colour},
                capprops={"color": spread.colour},
            )
            ax.scatter(
                spread.values,
                row + rng.uniform(-0.18, 0.18, len(spread.values)),
                s=14,
                color=spread.colour,
                alpha=0.65,
                lw=0,
                zorder=3,
            )
            low, high = spread.ci
            if low is not None and high is not None:
                ax.errorbar(
                    spread.mean,
                    row + 0.38,
                    xerr=[[spread.mean - low], [high - spread.mean]],
                    fmt="D",
                    color="#2b2f36",
                    ms=5,
                    capsize=3,
                    lw=1.2,
                    zorder=4,
                )
        ax.set_yticks(rows, [s.name.replace("_", " ") for s in spreads])
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.6, len(spreads) - 0.35)
        ax.grid(axis="y", visible=False)
        ax.set(xlabel="Dice per test image (inside the FOV)", title="Per-image Dice  (◆ mean with 95% bootstrap CI)")


def width_plot(labels: Sequence[str], shares: np.ndarray, series: Sequence[WidthSeries], path: Path, dpi: int) -> None:
    """Recall and Dice per vessel-width bucket: how well the thin vessels are found."""
    with _figure(path, 9.0, 3.9, dpi) as figure:
        axes = figure.subplots(1, 2, sharey=True)
        x = np.arange(len(labels))
        ticks = [f"{label}\n{percent(share)} of vessel px" for label, share in zip(labels, shares)]
        for ax, key, name in ((axes[0], "recall", "Recall"), (axes[1], "dice", "Dice")):
            for s in series:
                ax.plot(x, getattr(s, key), "o-", color=s.colour, lw=2, ms=6, label=s.name)
            ax.set_xticks(x, ticks, fontsize=8)
            ax.set(ylim=(0, 1.02), title=f"{name} by vessel width")
        axes[0].set_ylabel("fraction")
        figure.supxlabel("vessel width (2 × distance-transform radius − 1)", fontsize=10, color="#2b2f36")
        axes[1].legend(loc="lower right")


def training_plot(log: pd.DataFrame, path: Path, dpi: int) -> None:
    """Loss (with its parts when logged), learning rate, and validation Dice when logged, against step."""
    parts = [c for c in log.columns if c.startswith("loss_")]
    has_val = "val_dice" in log.columns and log["val_dice"].notna().any()
    rows = 3 if has_val else 2
    with _figure(path, 8.0, 2.3 * rows + 0.6, dpi) as figure:
        axes = figure.subplots(rows, 1, sharex=True, height_ratios=[2, 1, 1][:rows])
        steps = log["step"].to_numpy()
        loss = log["loss"].to_numpy(dtype=float)
        window = max(1, len(log) // 50)
        smooth = pd.Series(loss).rolling(window, min_periods=1).mean().to_numpy()
        axes[0].plot(steps, loss, color="#0072B2", lw=0.8, alpha=0.35 if window > 1 else 1.0)
        if window > 1:
            axes[0].plot(steps, smooth, color="#0072B2", lw=2, label=f"loss (mean of {window} steps)")
        else:
            axes[0].lines[-1].set_label("loss")
        for i, part in enumerate(parts):
            values = pd.Series(log[part].to_numpy(dtype=float)).rolling(window, min_periods=1).mean()
            axes[0].plot(steps, values, lw=1.2, color=("#D55E00", "#009E73", "#CC79A7", "#E69F00")[i % 4], label=part)
        axes[0].set(ylabel="loss", title="Loss")
        axes[0].legend(loc="upper right", ncols=2)
        axes[1].plot(steps, log["lr"].to_numpy(dtype=float), color="#2b2f36", lw=1.5)
        axes[1].set_ylabel("learning rate")
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if has_val:
            val = log[log["val_dice"].notna()]
            axes[2].plot(val["step"], val["val_dice"], "o-", color="#009E73", lw=1.5, ms=4)
            axes[2].set(ylabel="validation Dice", ylim=(0, 1))
        axes[-1].set_xlabel("step")

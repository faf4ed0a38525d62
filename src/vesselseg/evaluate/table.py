"""The small plain-text table `make demo` prints: predictor × headline metrics, baselines included."""

from __future__ import annotations

from vesselseg.evaluate.evaluate import EvaluationSummary

COLUMNS = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "auc", "cldice")


def format_table(summary: EvaluationSummary) -> str:
    def cell(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.3f}"

    header = f"{'predictor':<16}" + "".join(f"{c[:8]:>9}" for c in COLUMNS) + "   dice 95% CI"
    lines = [
        f"{summary.split} split, {summary.n_images} images, vessel fraction {summary.vessel_fraction:.3f} "
        f"(all-background accuracy {1 - summary.vessel_fraction:.3f}), FOV: {summary.fov}",
        "mean over images inside the FOV; threshold chosen on validation (max Dice)",
        header,
        "-" * len(header),
    ]
    for name, values in summary.metrics.items():
        low, high = summary.dice_ci.get(name, [None, None])
        ci = f"   [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        lines.append(f"{name:<16}" + "".join(f"{cell(values.get(c)):>9}" for c in COLUMNS) + ci)
    failed = [c for c in summary.honesty if not c.passed]
    lines.append(
        "honesty checks: all passed"
        if not failed
        else "honesty checks FAILED but allowed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
    )
    return "\n".join(lines)

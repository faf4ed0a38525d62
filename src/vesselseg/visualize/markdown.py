"""summary.md: the report's numbers as Markdown, for KFP's Markdown viewer (no images there)."""

from __future__ import annotations

from vesselseg.evaluate.honesty import EXPLANATIONS
from vesselseg.visualize.content import METRIC_NAMES, ReportContent, percent, test_label_readers

COLUMNS = ("iou", "precision", "recall", "specificity", "accuracy", "auc", "cldice")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_markdown(content: ReportContent) -> str:
    lines = [
        f"# {content.title}",
        "",
        f"**{content.split} split, {content.n_images} images** · vessel fraction {content.vessel_fraction:.3f} "
        f"(all-background accuracy {1 - content.vessel_fraction:.3f}) · FOV: {content.fov}",
        "",
        "| predictor | Dice [95% CI] | " + " | ".join(METRIC_NAMES[c] for c in COLUMNS) + " | threshold |",
        "|---|---|" + "---:|" * len(COLUMNS) + "---:|",
    ]
    for row in content.metrics:
        low, high = row.ci.get("dice", (None, None))
        dice = f"**{_num(row.values['dice'])}** [{_num(low)}, {_num(high)}]"
        name = f"*{row.name} (trivial)*" if row.baseline else f"**{row.name}**"
        threshold = _num(row.threshold) if row.threshold is not None else "—"
        cells = " | ".join(_num(row.values[c]) for c in COLUMNS)
        lines.append(f"| {name} | {dice} | {cells} | {threshold} |")
    lines += ["", f"_{content.averaging}._", ""]

    failed = [c for c in content.honesty if not c.passed]
    lines.append(
        f"**Honesty checks: all {len(content.honesty)} passed.**"
        if not failed
        else f"**Honesty checks: {len(failed)} of {len(content.honesty)} FAILED (allowed by configuration).**"
    )
    lines.append("")
    readers = test_label_readers(content.provenance)
    if readers is not None:
        lines += [
            f"Test labels (their own artifact, own bucket) reached only: **{', '.join(readers[0])}**; "
            f"not given to: {', '.join(readers[1]) or '-'} (from each task's inputs in the run's manifests).",
            "",
        ]
    for check in content.honesty:
        mark = "✅" if check.passed else "⚠️"
        who = f" [{check.predictor}]" if check.predictor else ""
        meaning = EXPLANATIONS.get(check.name)
        lines.append(f"- {mark} `{check.name}`{who}: {check.detail}" + (f" — _{meaning}_" if meaning else ""))

    lines += ["", "**Recall by vessel width** (pooled test pixels; thin vessels first)", ""]
    lines.append("| predictor | " + " | ".join(content.width_labels) + " |")
    lines.append("|---|" + "---:|" * len(content.width_labels))
    lines.append("| *share of vessel px* | " + " | ".join(percent(s) for s in content.width_shares) + " |")
    for width in content.width:
        lines.append(f"| {width.name} | " + " | ".join(_num(v) for v in width.recall()) + " |")

    lines += ["", f"**Featured images** (by {content.primary}'s Dice):", ""]
    for item in content.featured:
        dice = ", ".join(f"{name} {value:.3f}" for name, value in item.dice.items())
        lines.append(f"- {' / '.join(item.roles)}: `{item.sample_id}` (Dice {dice})")

    evaluation = content.inputs["evaluation"]["sha256"]
    run = [f"{key} `{value}`" for key, value in content.provenance.items() if isinstance(value, (str, int, float))]
    lines += [
        "",
        f"Dataset fingerprint `{content.inputs['dataset']['fingerprint']}` · evaluation `summary.json` sha256 "
        f"`{evaluation['summary.json']}`" + "".join(f" · {item}" for item in run),
        "",
        "Full provenance and every picture are in the HTML report.",
        "",
    ]
    return "\n".join(lines)

"""report.html: one static page, no script, no external resource; images as data URIs or sibling files."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import vesselseg
from vesselseg.evaluate import HonestyCheck
from vesselseg.evaluate.honesty import EXPLANATIONS
from vesselseg.visualize.colours import ERROR_COLOURS, ERROR_LABELS, hex_colour
from vesselseg.visualize.content import (
    METRIC_NAMES,
    TABLE_METRICS,
    Featured,
    MetricRow,
    ReportContent,
    percent,
    test_label_readers,
)

SECTIONS = {
    "metrics": "Metrics",
    "examples": "Best · median · worst",
    "curves": "ROC & PR",
    "dice": "Per-image Dice",
    "thin-vessels": "Thin vessels",
    "training": "Training",
    "gallery": "All images",
    "honesty": "Honesty checks",
    "provenance": "Provenance",
}

CSS = """
:root { --ink:#1f2430; --muted:#5d6575; --line:#e3e6eb; --paper:#f6f7f9; --accent:#0072B2; --ok:#0a7d4f;
        --warn:#b86e00; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color:var(--ink); background:var(--paper); }
.wrap { max-width: 1320px; margin: 0 auto; padding: 0 28px; }
header.hero { background: linear-gradient(135deg, #0d1b2a 0%, #1b263b 60%, #23324d 100%); color:#eef1f6;
              padding: 36px 0 30px; }
.eyebrow { text-transform: uppercase; letter-spacing: .12em; font-size: 12px; color:#9fb3c8; margin:0 0 6px; }
h1 { font-size: 32px; margin: 0 0 8px; font-weight: 700; letter-spacing: -.01em; }
.lede { color:#c8d3e0; max-width: 900px; margin: 0 0 22px; }
.cards { display:flex; flex-wrap:wrap; gap:14px; }
.card { background: rgba(255,255,255,.07); border:1px solid rgba(255,255,255,.12); border-radius: 12px;
        padding: 14px 18px; min-width: 190px; }
.card .label { font-size: 13px; color:#b9c6d6; display:flex; align-items:center; gap:8px; }
.card .big { font-size: 34px; font-weight: 700; font-variant-numeric: tabular-nums; line-height:1.15; }
.card .small { font-size: 12.5px; color:#b9c6d6; font-variant-numeric: tabular-nums; }
.card.baseline .big { color:#9aa6b6; }
.card.ok { border-color: rgba(52,199,120,.55); } .card.warn { border-color: rgba(255,176,32,.7); }
.dot { width:10px; height:10px; border-radius:50%; display:inline-block; flex:none; }
nav.toc { position: sticky; top:0; z-index:5; background: rgba(255,255,255,.94); border-bottom:1px solid var(--line);
          backdrop-filter: blur(6px); }
nav.toc .wrap { display:flex; flex-wrap:wrap; gap: 4px 18px; padding-top:10px; padding-bottom:10px; }
nav.toc a { color: var(--muted); text-decoration:none; font-size: 13.5px; font-weight:600; }
nav.toc a:hover { color: var(--accent); }
section { background:#fff; border:1px solid var(--line); border-radius: 14px; margin: 22px 0; padding: 22px 26px; }
h2 { font-size: 21px; margin: 0 0 4px; }
h3 { font-size: 16px; margin: 22px 0 8px; }
.note { color: var(--muted); font-size: 13.5px; margin: 4px 0 14px; max-width: 980px; }
img { max-width:100%; height:auto; display:block; }
figure { margin: 10px 0 18px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.grid2 { display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 18px; }
table { border-collapse: collapse; width:100%; font-variant-numeric: tabular-nums; font-size: 13.5px; }
th, td { padding: 7px 8px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); font-weight: 600; }
th:first-child, td:first-child { text-align:left; }
tr.baseline td { color: var(--muted); font-style: italic; }
td .ci { display:block; font-size: 11.5px; color: #8a919e; font-style: normal; white-space: nowrap; }
td.best { font-weight: 700; }
td.dice { background-repeat: no-repeat; background-size: var(--w) 4px; background-position: left bottom;
          background-image: linear-gradient(var(--c), var(--c)); }
.scroll { overflow-x:auto; }
.legend { display:flex; flex-wrap:wrap; gap: 8px 22px; align-items:center; font-size: 14px; margin: 6px 0 12px; }
.swatch { width: 16px; height: 16px; border-radius: 3px; display:inline-block; vertical-align: -3px; margin-right: 6px;
          border: 1px solid #0003; }
.role { display:inline-block; padding: 2px 9px; border-radius: 999px; font-size: 12px; font-weight: 700;
        text-transform: uppercase; letter-spacing: .05em; margin-right: 6px; }
.role.best { background:#e3f4ea; color: var(--ok); } .role.median { background:#e6eef8; color: var(--accent); }
.role.worst { background:#fbe9e7; color: var(--bad); }
.example { border-top: 1px solid var(--line); padding-top: 6px; }
.example:first-of-type { border-top: 0; }
.panel { background: #16181d; border-radius: 10px; overflow: hidden; display: inline-block; max-width: 100%;
         vertical-align: top; }
details summary { cursor: pointer; color: var(--accent); font-weight: 600; font-size: 14px; margin: 4px 0 10px; }
.gallery { display:grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
.thumb { margin:0; background:#16181d; border-radius: 8px; overflow:hidden; }
.thumb figcaption { color:#d5dae3; padding: 6px 8px 8px; margin:0; font-size: 12px; display:flex;
                    justify-content: space-between; gap: 6px; }
.thumb .bar { height: 4px; background: #2c313b; } .thumb .bar span { display:block; height:100%; }
ul.checks { list-style: none; padding: 0; margin: 0; }
ul.checks li { display:flex; gap: 12px; align-items: baseline; padding: 8px 0; border-bottom: 1px solid var(--line); }
.badge { font-size: 12px; font-weight: 700; padding: 2px 8px; border-radius: 6px; white-space: nowrap; }
.badge.pass { background:#e3f4ea; color: var(--ok); } .badge.allowed { background:#fff1dc; color: var(--warn); }
.badge.fail { background:#fbe9e7; color: var(--bad); }
.check-name { font-weight: 600; min-width: 230px; }
.check-detail { color: var(--muted); font-size: 14px; }
.check-meaning { font-size: 14px; margin-right: 0.5em; }
table.prov td, table.prov th { text-align:left; font-size: 13.5px; }
table.prov td:first-child { color: var(--muted); white-space: nowrap; width: 1%; padding-right: 18px; }
table.prov table { margin: -4px 0; } table.prov table td { border-bottom: 1px dashed var(--line); }
code { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; word-break: break-all; }
footer { color: var(--muted); font-size: 12.5px; padding: 10px 0 40px; }
"""


def render_html(content: ReportContent, out_dir: Path, embed: bool) -> str:
    def src(path: str) -> str:
        if not embed:
            return escape(path)
        return "data:image/png;base64," + base64.b64encode((out_dir / path).read_bytes()).decode("ascii")

    sections = {
        "metrics": _metrics(content),
        "examples": _examples(content, src, link=not embed),
        "curves": _curves(content, src),
        "dice": _dice(content, src),
        "thin-vessels": _thin_vessels(content, src),
        "training": _training(content, src) if "training" in content.plots else None,
        "gallery": _gallery(content, src),
        "honesty": _honesty(content.honesty, test_label_readers(content.provenance)),
        "provenance": _provenance(content),
    }
    present = {key: body for key, body in sections.items() if body is not None}
    nav = "".join(f'<a href="#{key}">{escape(SECTIONS[key])}</a>' for key in present)
    body = "\n".join(f'<section id="{key}">\n{html}\n</section>' for key, html in present.items())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(content.title)} · vesselseg report</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
{_hero(content)}
<nav class="toc"><div class="wrap">{nav}</div></nav>
<main class="wrap">
{body}
</main>
<footer class="wrap">Generated {escape(content.generated_at)} by vesselseg {escape(vesselseg.__version__)}.
Every number above comes from the evaluation files whose sha256 is listed under Provenance.</footer>
</body>
</html>
"""


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _hero(content: ReportContent) -> str:
    cards = []
    thin = {row.name: row.recall()[0] for row in content.width}
    for row in content.predictors:
        low, high = row.ci.get("dice", (None, None))
        cards.append(
            f'<div class="card"><div class="label"><span class="dot" style="background:{row.colour}"></span>'
            f'{escape(row.name)} · Dice</div><div class="big">{_num(row.values["dice"])}</div>'
            f'<div class="small">95% CI {_num(low)} – {_num(high)}</div>'
            f'<div class="small">thin vessels ({escape(content.width_labels[0])}): '
            f"recall {_num(thin[row.name])}</div></div>"
        )
    baselines = [row for row in content.metrics if row.baseline]
    if baselines:
        lines = "".join(
            f'<div class="small">{escape(_display(r))}: Dice {_num(r.values["dice"])}</div>' for r in baselines
        )
        cards.append(f'<div class="card baseline"><div class="label">trivial baselines</div>{lines}</div>')
    failed = [c for c in content.honesty if not c.passed]
    kind, big, small = (
        ("warn", f"{len(failed)} failed", "allowed by configuration, see below")
        if failed
        else ("ok", f"✓ {len(content.honesty)}/{len(content.honesty)}", "all passed")
    )
    cards.append(
        f'<div class="card {kind}"><div class="label">honesty checks</div><div class="big">{big}</div>'
        f'<div class="small">{small}</div></div>'
    )
    return f"""<header class="hero"><div class="wrap">
<p class="eyebrow">vesselseg report · {escape(content.split)} split · {content.n_images} images</p>
<h1>{escape(content.title)}</h1>
<p class="lede">Vessels cover {content.vessel_fraction:.1%} of the scored pixels, so predicting no vessel at all is
already {1 - content.vessel_fraction:.1%} accurate: compare Dice, not accuracy. Numbers are means over
{escape(content.split)} images inside the field of view ({escape(content.fov)}) at each predictor's chosen threshold,
with 95% bootstrap confidence intervals.</p>
<div class="cards">{"".join(cards)}</div>
</div></header>"""


def _display(row: MetricRow) -> str:
    """Predictors by their own name; the trivial guesses in words."""
    return row.name.replace("_", " ") if row.baseline else row.name


def _metrics(content: ReportContent) -> str:
    columns = list(TABLE_METRICS)
    # Best among the predictors: a trivial guess "wins" specificity or recall by doing nothing.
    best = {m: max((r.values[m] for r in content.predictors if r.values[m] is not None), default=None) for m in columns}
    head = "".join(f"<th>{METRIC_NAMES[m]}</th>" for m in columns)
    rows = []
    for row in content.metrics:
        cells = []
        for m in columns:
            value = row.values[m]
            low, high = row.ci.get(m, (None, None))
            ci = f'<span class="ci">{_num(low)}–{_num(high)}</span>' if low is not None and high is not None else ""
            classes = ["best"] if value is not None and value == best[m] and not row.baseline else []
            style = ""
            if m == "dice" and value is not None:
                classes.append("dice")
                style = f' style="--w:{value * 100:.1f}%;--c:{row.colour}"'
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}{style}>{_num(value)}{ci}</td>")
        threshold = _num(row.threshold) if row.threshold is not None else "—"
        name = escape(_display(row)) + (" <small>(trivial)</small>" if row.baseline else "")
        rows.append(
            f'<tr class="{"baseline" if row.baseline else "predictor"}"><td><span class="dot" '
            f'style="background:{row.colour}"></span> {name}</td>{"".join(cells)}'
            f"<td>{_num(row.dice_pooled)}</td><td>{threshold}</td></tr>"
        )
    sources = "; ".join(f"{escape(r.name)}: {escape(r.threshold_source or '')}" for r in content.predictors)
    return f"""<h2>Metrics</h2>
<p class="note">{escape(content.averaging)}. Small numbers under each value: 95% bootstrap CI over images.
Trivial baselines score the same pixels with the same code. Thresholds: {sources}.</p>
<div class="scroll"><table>
<thead><tr><th>Predictor</th>{head}<th>Dice pooled</th><th>Threshold</th></tr></thead>
<tbody>{"".join(rows)}</tbody>
</table></div>"""


def _error_legend() -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><span class="swatch" style="background:{hex_colour(colour)}"></span>'
            f"{escape(ERROR_LABELS[key])}</span>"
            for key, colour in ERROR_COLOURS.items()
        )
        + "<span>grey: correct background · dark: outside the field of view (not scored)</span></div>"
    )


def _examples(content: ReportContent, src: Any, link: bool) -> str:
    parts = [
        "<h2>Best, median and worst test images</h2>",
        f'<p class="note">Chosen by {escape(content.primary)}\'s Dice. Each panel: the photograph, the ground truth, '
        "the prediction at the chosen threshold, its errors inside the field of view and the probability map, at full "
        "size; below, the same views enlarged on the window where thin vessels are densest (framed on the photograph), "
        "so one-pixel vessels are visible. Colours are safe for colour-blind readers.</p>",
        _error_legend(),
    ]
    for item in content.featured:
        parts.append(_example(item, src, link, content.primary))
    return "\n".join(parts)


def _example(item: Featured, src: Any, link: bool, primary: str) -> str:
    roles = "".join(f'<span class="role {r}">{r}</span>' for r in item.roles)
    dice = " · ".join(f"{escape(n)} Dice {d:.3f}" for n, d in item.dice.items())
    figures = []
    for name, panel in item.panels.items():
        img = f'<img src="{src(panel)}" alt="{escape(item.sample_id)}: {escape(name)} panel">'
        if link:
            img = f'<a href="{escape(panel)}">{img}</a>'
        overlay = f' · <a href="{escape(item.overlays[name])}">error overlay alone, full size</a>' if link else ""
        figure = f'<figure><div class="panel">{img}</div><figcaption>{escape(name)}{overlay}</figcaption></figure>'
        if name != primary:  # the other predictors on the same image, one click away
            summary = f"{escape(name)} on this image: Dice {item.dice[name]:.3f}"
            figure = f"<details><summary>{summary}</summary>{figure}</details>"
        figures.append(figure)
    heading = f"<h3>{roles}{escape(item.sample_id)} <small>— {dice}</small></h3>"
    return f'<div class="example">{heading}{"".join(figures)}</div>'


def _curves(content: ReportContent, src: Any) -> str:
    return f"""<h2>ROC and precision–recall</h2>
<p class="note">Pooled over all {escape(content.split)} pixels inside the field of view. Dots mark each predictor's
chosen threshold; ✕ marks the trivial guesses (all background, all foreground). A dashed curve belongs to a map
that is not a calibrated probability, whose AUC and AP are not reported. Faint lines in the PR plot join points of
equal Dice.</p>
<div class="grid2"><figure><img src="{src(content.plots["roc"])}" alt="ROC curves"></figure>
<figure><img src="{src(content.plots["pr"])}" alt="precision-recall curves"></figure></div>"""


def _dice(content: ReportContent, src: Any) -> str:
    return f"""<h2>Per-image Dice</h2>
<p class="note">One dot per {escape(content.split)} image; boxes span the middle half. The trivial baselines show
where a predictor that learned nothing would sit.</p>
<figure><img src="{src(content.plots["dice"])}" alt="per-image Dice distributions"></figure>"""


def _thin_vessels(content: ReportContent, src: Any) -> str:
    head = "".join(
        f"<th>{escape(label)}<br><small>{escape(percent(share))} of vessel px</small></th>"
        for label, share in zip(content.width_labels, content.width_shares)
    )
    rows = []
    for row in content.width:
        recall = "".join(f"<td>{_num(v)}</td>" for v in row.recall())
        dice = "".join(f"<td>{_num(v)}</td>" for v in row.dice())
        name = f'<span class="dot" style="background:{row.colour}"></span> {escape(row.name)}'
        rows.append(f"<tr><td>{name} recall</td>{recall}</tr><tr><td>{name} Dice</td>{dice}</tr>")
    return f"""<h2>Thin vessels: performance by vessel width</h2>
<p class="note">Every ground-truth vessel pixel takes the width of its nearest centreline point (2 × distance-transform
radius − 1); false positives are charged to the vessel they lie beside. Recall shows which widths are found; thin
vessels are where segmenters usually fail first. Pooled over the {escape(content.split)} images.</p>
<figure><img src="{src(content.plots["vessel_width"])}" alt="recall and Dice by vessel width"></figure>
<div class="scroll"><table><thead><tr><th>Width</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>"""


def _training(content: ReportContent, src: Any) -> str:
    return f"""<h2>Training</h2>
<p class="note">Loss per logged step (thin) and its running mean, its parts when logged, the learning-rate
schedule, and validation Dice when it was measured.</p>
<figure><img src="{src(content.plots["training"])}" alt="training loss and learning rate"></figure>"""


def _gallery(content: ReportContent, src: Any) -> str:
    items = []
    for item in content.gallery:
        items.append(
            f'<figure class="thumb"><img src="{src(item.thumbnail)}" alt="{escape(item.sample_id)} errors">'
            f'<div class="bar"><span style="width:{item.dice * 100:.1f}%;background:{_dice_colour(item.dice)}">'
            "</span></div>"
            f"<figcaption><span>{escape(item.sample_id)}</span><b>{item.dice:.3f}</b></figcaption></figure>"
        )
    return f"""<h2>All {escape(content.split)} images, worst first</h2>
<p class="note">{escape(content.primary)}'s errors on every image, ordered by Dice (the number and bar under each).</p>
{_error_legend()}
<div class="gallery">{"".join(items)}</div>"""


def _dice_colour(dice: float) -> str:
    # Blue-to-orange rather than green-to-red, for the same readers as the overlay colours.
    return "#0072B2" if dice >= 0.75 else "#56B4E9" if dice >= 0.6 else "#E69F00" if dice >= 0.4 else "#D55E00"


def _honesty(checks: Sequence[HonestyCheck], readers: tuple[list[str], list[str]] | None) -> str:
    items = []
    for check in checks:
        badge = (
            '<span class="badge pass">✓ passed</span>'
            if check.passed
            else '<span class="badge allowed">✗ failed, allowed</span>'
            if check.allowed
            else '<span class="badge fail">✗ failed</span>'
        )
        who = f" [{escape(check.predictor)}]" if check.predictor else ""
        meaning = EXPLANATIONS.get(check.name, "")
        items.append(
            f'<li>{badge}<span class="check-name">{escape(check.name)}{who}</span>'
            f'<span class="check-meaning">{escape(meaning)}</span>'
            f'<span class="check-detail">{escape(check.detail)}</span></li>'
        )
    failed = [c for c in checks if not c.passed]
    verdict = (
        f"{len(failed)} check(s) failed and were explicitly allowed; read the numbers with that in mind."
        if failed
        else "All checks passed: no prediction copies the ground truth, no predictor read test ground truth, "
        "no test image is also a training image, every test image was predicted at native size, and nothing "
        "agrees with the ground truth in a way no real predictor does."
    )
    return (
        f'<h2>Honesty checks</h2><p class="note">{escape(verdict)}</p>{_label_access(readers)}'
        f'<ul class="checks">{"".join(items)}</ul>'
    )


def _label_access(readers: tuple[list[str], list[str]] | None) -> str:
    if readers is None:
        return '<p class="note">Which tasks received the test labels is not recorded for this report.</p>'
    received, others = readers
    return (
        '<p class="note"><b>Who could read the test labels.</b> The test split\'s ground truth is its own artifact, '
        "in its own bucket; the run's manifests (each task's inputs) show it reached only: "
        f"<b>{escape(', '.join(received))}</b>. Not given to: {escape(', '.join(others) or '-')}. "
        "No input of those tasks contains a test mask.</p>"
    )


def _provenance(content: ReportContent) -> str:
    return f"""<h2>Provenance</h2>
<p class="note">As the pipeline passed it, then what this report read itself.</p>
<h3>Run</h3>{_tree(content.provenance)}
<h3>Inputs read by the report</h3>{_tree(content.inputs)}"""


_CODE_LIKE = re.compile(r"^[0-9a-f]{16,}$|://|^[\w.-]+/[\w./-]+$")


def _tree(value: Any, depth: int = 0) -> str:
    """A nested table of a JSON-like value; hashes and paths in code style, nothing turned into a link."""
    if isinstance(value, dict):
        if not value:
            return "<code>{}</code>"
        rows = "".join(f"<tr><td>{escape(str(k))}</td><td>{_tree(v, depth + 1)}</td></tr>" for k, v in value.items())
        table = f'<table class="prov">{rows}</table>'
        if depth >= 2 and len(value) > 3:  # deep configs stay one click away, so the page stays readable
            return f"<details><summary>{len(value)} fields</summary>{table}</details>"
        return table
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return "<code>" + escape(json.dumps(list(value), default=str)) + "</code>"
        return _tree({str(i): v for i, v in enumerate(value)}, depth)
    if isinstance(value, str):
        return f"<code>{escape(value)}</code>" if _CODE_LIKE.search(value) else escape(value)
    return escape(json.dumps(value, default=str))

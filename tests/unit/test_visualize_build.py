"""The report of a small real pipeline run: data-prep, the Frangi baseline, evaluation, report.

The ``pipeline_run`` fixture is session-scoped and shared with ``test_visualize_browser``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vesselseg.baseline import FrangiConfig, frangi_predictions, frangi_probability
from vesselseg.baseline.predict import dataset_files
from vesselseg.data import DataPrepConfig, PreparedDataset, SplitConfig, SyntheticConfig, prepare_dataset
from vesselseg.errors import DataError
from vesselseg.evaluate import EvaluateConfig, evaluate
from vesselseg.evaluate.honesty import EXPLANATIONS
from vesselseg.metrics import ProbabilityMap
from vesselseg.predictions import PredictionSet, PredictionWriter, PredictorInfo
from vesselseg.visualize import ERROR_COLOURS, ReportConfig, build_report, error_overlay
from vesselseg.visualize.html import SECTIONS


@dataclass(frozen=True)
class PipelineRun:
    dataset: PreparedDataset
    predictions: list[PredictionSet]
    evaluation: Path
    train_log: Path
    provenance: dict


def binary_predictor(dataset: PreparedDataset, out: Path) -> PredictionSet:
    """A second, uncalibrated predictor: Frangi cut at a fixed level, stored as a 0/1 map."""
    writer = PredictionWriter(out)
    for split in ("val", "test"):
        for sample_id in dataset.ids(split):
            vesselness = frangi_probability(dataset.image(sample_id), dataset.fov(sample_id))
            cut = ProbabilityMap.from_probability(vesselness, sample_id).mask_at(60)
            writer.add(split, ProbabilityMap.from_probability(cut, sample_id))
    read = [f for split in ("val", "test") for f in dataset_files(dataset, split, ("image", "fov"))]
    info = PredictorInfo(
        name="frangi_binary", threshold=0.5, threshold_source="fixed", calibrated=False, read_files=read
    )
    writer.close(info)
    return PredictionSet(out)


def write_train_log(path: Path, steps: int = 300) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w") as log:
        for step in range(steps):
            lr = 4e-5 * min(1.0, step / 15) * 0.5 * (1 + math.cos(math.pi * step / steps))
            bce, dice = 0.6 * math.exp(-step / 80) + 0.05 * rng.random(), 0.8 * math.exp(-step / 120) + 0.1
            record = {"step": step, "loss": 2 * bce + 0.5 * dice + 0.1, "lr": lr, "loss_bce": bce, "loss_dice": dice}
            if step % 50 == 49:
                record["val_dice"] = 0.5 + 0.3 * (1 - math.exp(-step / 100))
            log.write(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    root = tmp_path_factory.mktemp("report-run")
    prep = DataPrepConfig(
        synthetic=SyntheticConfig(count=10, size=160, seed=7), split=SplitConfig(val_fraction=0.2, test_fraction=0.4)
    )
    prepare_dataset(prep, root / "dataset")
    dataset = PreparedDataset(root / "dataset")
    frangi_predictions(dataset, ["val", "test"], "val", FrangiConfig(), root / "frangi")
    predictions = [PredictionSet(root / "frangi"), binary_predictor(dataset, root / "binary")]
    evaluate(dataset, predictions, EvaluateConfig(n_boot=200), root / "evaluation")
    provenance = {
        "dataset": {"fingerprint": dataset.fingerprint, "uri": "s3://mlpipeline/vesselseg/datasets/abc"},
        "object_store": "http://127.0.0.1:8333",  # text in the provenance table, never a link
        "code_version": "0.1.0+test",
        "configs": {"data_prep": prep.model_dump(mode="json")},
    }
    return PipelineRun(dataset, predictions, root / "evaluation", write_train_log(root / "train.jsonl"), provenance)


def build(run: PipelineRun, out: Path, **config: object):
    return build_report(
        run.dataset,
        run.predictions,
        run.evaluation,
        out,
        provenance=run.provenance,
        train_log=run.train_log,
        config=ReportConfig(**config),
    )


class References(HTMLParser):
    """Section ids and every URL the page could fetch (src, href, srcset) or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section":
            self.sections.append(values.get("id") or "")
        for name in ("src", "href", "srcset", "poster", "data"):
            if values.get(name) is not None:
                self.urls.append((tag, values[name] or ""))


def references(html: str) -> References:
    parser = References()
    parser.feed(html)
    return parser


def test_one_file_report_has_every_section_and_embeds_every_image(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    result = build(pipeline_run, tmp_path / "report")
    html = result.html.read_text()
    refs = references(html)
    assert refs.sections == list(SECTIONS)
    images = [url for tag, url in refs.urls if tag == "img"]
    # best, median, worst (4 test images: three distinct) x 2 predictors, 4 plots + training, 4 thumbnails
    assert len(images) == 3 * 2 + 5 + 4
    for url in images:
        assert url.startswith("data:image/png;base64,")
        png = base64.b64decode(url.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert [url for _, url in refs.urls if not url.startswith(("data:", "#"))] == []
    assert not re.search(r"url\(|@import|<script", html)
    assert "http://127.0.0.1:8333" in html  # the provenance shows it as text


def test_report_with_files_beside_references_only_files_it_wrote(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = build(pipeline_run, out, embed_images=False)
    refs = references(result.html.read_text())
    local = [url for _, url in refs.urls if not url.startswith(("data:", "#"))]
    assert len(local) > 10
    for url in local:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:|^//|^/|\.\.", url), url  # relative, inside the folder
        assert (out / url).is_file(), url
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == set(result.files)
    assert {"report.html", "summary.md", "vessel_width.csv", "plots/training.png"} <= written
    for path in written - {"report.html", "summary.md", "vessel_width.csv"}:
        with Image.open(out / path) as image:
            image.verify()


def class_counts(overlay: np.ndarray, fov: np.ndarray) -> dict[str, int]:
    inside = overlay[fov]
    return {key: int(np.all(inside == colour, axis=1).sum()) for key, colour in ERROR_COLOURS.items()}


def test_error_overlay_colours_count_exactly_the_evaluated_counts(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    result = build(pipeline_run, tmp_path / "report", embed_images=False)
    table = pd.read_parquet(pipeline_run.evaluation / "per_image.parquet")
    table = table[table["threshold_kind"] == "selected"].set_index(["predictor", "sample_id"])
    summary = json.loads((pipeline_run.evaluation / "summary.json").read_text())
    dataset = pipeline_run.dataset
    checked_files = 0
    for preds in pipeline_run.predictions:
        name = preds.info.name
        level = summary["thresholds"][name]["level"]
        for sample_id in dataset.ids("test"):
            row = table.loc[(name, sample_id)]
            expected = {"tp": int(row["tp"]), "fp": int(row["fp"]), "fn": int(row["fn"])}
            assert min(expected.values()) > 0  # every class present, so a swapped colour would show
            fov = dataset.fov(sample_id)
            image, truth = dataset.image(sample_id), dataset.mask(sample_id)
            overlay = error_overlay(image, preds.prob(sample_id), truth, fov, level)
            assert class_counts(overlay, fov) == expected
            assert class_counts(overlay, ~fov) == {"tp": 0, "fp": 0, "fn": 0}
            written = tmp_path / "report" / "overlays" / name / f"{sample_id}.png"
            if written.exists():  # the featured images' overlays, as written to the report
                assert class_counts(np.asarray(Image.open(written).convert("RGB")), fov) == expected
                checked_files += 1
    assert checked_files == 3 * 2
    assert set(result.featured) == {"best", "median", "worst"}


def test_best_median_worst_follow_the_primary_predictors_dice(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    result = build(pipeline_run, tmp_path / "report", primary="frangi_binary", embed_images=False)
    table = pd.read_parquet(pipeline_run.evaluation / "per_image.parquet")
    dice = table[(table["predictor"] == "frangi_binary") & (table["threshold_kind"] == "selected")]
    ordered = dice.sort_values(["dice", "sample_id"])["sample_id"].tolist()
    assert result.featured == {"worst": ordered[0], "median": ordered[(len(ordered) - 1) // 2], "best": ordered[-1]}
    for sample_id in ordered:
        assert f"thumbs/{sample_id}.png" in result.files
    html = result.html.read_text()
    gallery = html[html.index('<section id="gallery">') :]
    positions = [gallery.index(f"thumbs/{sample_id}.png") for sample_id in ordered]
    assert positions == sorted(positions)


def test_width_table_adds_up_to_the_evaluated_counts(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    build(pipeline_run, tmp_path / "report", embed_images=False)
    widths = pd.read_csv(tmp_path / "report" / "vessel_width.csv")
    table = pd.read_parquet(pipeline_run.evaluation / "per_image.parquet")
    for name, group in widths.groupby("predictor"):
        rows = table[(table["predictor"] == name) & (table["threshold_kind"] == "selected")]
        assert len(group) == 4  # the default three edges cut four buckets
        assert group[["tp", "fp", "fn"]].sum().tolist() == rows[["tp", "fp", "fn"]].sum().tolist()
        assert group["truth_px"].sum() == (rows["tp"] + rows["fn"]).sum()


def test_markdown_summary_has_the_table_baselines_cis_and_honesty(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    result = build(pipeline_run, tmp_path / "report", embed_images=False)
    markdown = result.markdown.read_text()
    summary = json.loads((pipeline_run.evaluation / "summary.json").read_text())
    for name in ("frangi", "frangi_binary", "all_background", "all_foreground"):
        low, high = summary["dice_ci"][name]
        dice = summary["metrics"][name]["dice"]
        row = rf"\| \*+{name}( \(trivial\))?\*+ \| \*\*{dice:.3f}\*\* \[{low:.3f}, {high:.3f}\] \|"
        assert re.search(row, markdown), name
    assert f"**Honesty checks: all {len(summary['honesty'])} passed.**" in markdown
    assert summary["thresholds"]["frangi"]["source"] in result.html.read_text()


def test_honesty_section_explains_each_check_and_who_could_read_the_test_labels(
    pipeline_run: PipelineRun, tmp_path: Path
) -> None:
    access = [
        {"stage": "data-prep", "read_test_labels": True, "note": "wrote them"},
        {"stage": "evaluate", "read_test_labels": True},
        {"stage": "infer", "read_test_labels": False},
        {"stage": "finetune", "read_test_labels": False},
        {"stage": "visualize", "read_test_labels": True},
    ]
    run = PipelineRun(
        pipeline_run.dataset,
        pipeline_run.predictions,
        pipeline_run.evaluation,
        pipeline_run.train_log,
        {**pipeline_run.provenance, "test_label_access": access},
    )
    result = build(run, tmp_path / "report", embed_images=False)
    markdown, page = result.markdown.read_text(), result.html.read_text()
    assert "reached only: **data-prep, evaluate, visualize**; not given to: finetune, infer" in markdown
    assert "reached only: <b>data-prep, evaluate, visualize</b>. Not given to: finetune, infer" in page
    summary = json.loads((pipeline_run.evaluation / "summary.json").read_text())
    for check in summary["honesty"]:
        assert f"`{check['name']}`" in markdown and EXPLANATIONS[check["name"]] in markdown
        assert html.escape(EXPLANATIONS[check["name"]]) in page
    unrecorded = build(pipeline_run, tmp_path / "plain", embed_images=False)
    assert "not recorded for this report" in unrecorded.html.read_text()


def test_training_section_only_with_a_training_log(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    result = build_report(
        pipeline_run.dataset,
        pipeline_run.predictions,
        pipeline_run.evaluation,
        tmp_path / "report",
        provenance={},
        config=ReportConfig(embed_images=False),
    )
    sections = references(result.html.read_text()).sections
    assert sections == [key for key in SECTIONS if key != "training"]
    assert "plots/training.png" not in result.files


def test_report_refuses_a_folder_that_is_not_empty(pipeline_run: PipelineRun, tmp_path: Path) -> None:
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "old.png").write_bytes(b"")
    with pytest.raises(DataError, match="not empty"):
        build(pipeline_run, tmp_path / "report")

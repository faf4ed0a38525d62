"""Time ``build_report`` on 100 test images of 584x565 (DRIVE's size) with two predictors; goal: under 60 s.

The inputs are made by the real pipeline, untimed: synthetic fundus images (grown at 584 px, cut to
565 columns, never resized) written as a generic image/mask/FOV folder, ``prepare_dataset``, the Frangi
baseline, a second predictor (Frangi cut to a 0/1 map) and ``evaluate``. Then only the report is timed,
with its defaults (images embedded in report.html). A second run can reuse the inputs with ``--work DIR``.

Run: ``.venv/bin/python benchmarks/report.py [--work DIR]``; exits 1 when the goal is missed.
"""

import argparse
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe
from PIL import Image

from vesselseg.baseline import FrangiConfig, frangi_predictions
from vesselseg.baseline.predict import dataset_files
from vesselseg.data import DataPrepConfig, PreparedDataset, SplitConfig, generate_fundus, prepare_dataset
from vesselseg.evaluate import EvaluateConfig, evaluate
from vesselseg.metrics import ProbabilityMap
from vesselseg.predictions import PredictionSet, PredictionWriter, PredictorInfo
from vesselseg.visualize import build_report

HEIGHT, WIDTH = 584, 565
N_TEST = 100
N_IMAGES = 110  # with the split below: 100 test, 6 val (threshold choice), 4 train
SPLIT = SplitConfig(val_fraction=0.05, test_fraction=0.91)
GOAL_S = 60.0


def write_source(folder: Path) -> None:
    for sub in ("images", "masks", "fov"):
        (folder / sub).mkdir(parents=True)
    left = (HEIGHT - WIDTH) // 2
    for index in range(N_IMAGES):
        fundus = generate_fundus(HEIGHT, seed=11, index=index)
        cut = np.s_[:, left : left + WIDTH]
        Image.fromarray(fundus.image[cut]).save(folder / "images" / f"img{index:03d}.png")
        for sub, mask in (("masks", fundus.mask[cut]), ("fov", fundus.fov[cut])):
            Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(folder / sub / f"img{index:03d}.png")


def binary_predictions(dataset: PreparedDataset, frangi: PredictionSet, out: Path) -> PredictionSet:
    writer = PredictionWriter(out)
    for split in ("val", "test"):
        for sample_id in dataset.ids(split):
            cut = frangi.prob(sample_id).mask_at(60)
            writer.add(split, ProbabilityMap.from_probability(cut, sample_id))
    read = [f for split in ("val", "test") for f in dataset_files(dataset, split, ("image", "fov"))]
    info = PredictorInfo(
        name="frangi_binary", threshold=0.5, threshold_source="fixed", calibrated=False, read_files=read
    )
    writer.close(info)
    return PredictionSet(out)


def prepare_inputs(work: Path) -> None:
    if (work / "evaluation" / "summary.json").exists():
        print(f"reusing the inputs in {work}")
        return
    started = time.perf_counter()
    write_source(work / "source")
    prepare_dataset(DataPrepConfig(source=str(work / "source"), layout="generic", split=SPLIT), work / "dataset")
    dataset = PreparedDataset(work / "dataset")
    if len(dataset.ids("test")) != N_TEST:
        sys.exit(f"split gave {len(dataset.ids('test'))} test images, not {N_TEST}")
    frangi_predictions(dataset, ["val", "test"], "val", FrangiConfig(), work / "frangi")
    frangi = PredictionSet(work / "frangi")
    binary = binary_predictions(dataset, frangi, work / "binary")
    evaluate(dataset, [frangi, binary], EvaluateConfig(), work / "evaluation")
    print(f"inputs prepared in {time.perf_counter() - started:.0f} s (untimed)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the inputs, kept and reused; default: a temporary one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        return run(args.work)
    with tempfile.TemporaryDirectory(prefix="vesselseg-report-bench-") as work:
        return run(Path(work))


def run(work: Path) -> int:
    prepare_inputs(work)
    dataset = PreparedDataset(work / "dataset")
    predictions = [PredictionSet(work / "frangi"), PredictionSet(work / "binary")]
    out = work / "report"
    shutil.rmtree(out, ignore_errors=True)
    provenance = {"dataset": {"fingerprint": dataset.fingerprint}, "code_version": "benchmark"}

    started = time.perf_counter()
    result = build_report(dataset, predictions, work / "evaluation", out, provenance=provenance)
    seconds = time.perf_counter() - started

    html_mb = result.html.stat().st_size / 1e6
    print()
    print(f"machine: {describe()}, {platform.platform()}")
    print(f"{'images':>7} {'size':>9} {'predictors':>10} {'seconds':>8} {'s/image':>8} {'report.html':>12} {'goal':>6}")
    print(
        f"{result.n_images:>7} {f'{HEIGHT}x{WIDTH}':>9} {len(predictions):>10} {seconds:>8.1f} "
        f"{seconds / result.n_images:>8.3f} {f'{html_mb:.1f} MB':>12} {f'<{GOAL_S:.0f} s':>6}"
    )
    return 0 if seconds < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())

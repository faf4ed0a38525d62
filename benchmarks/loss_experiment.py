"""Fine-tuning variants on the synthetic fundus data, scored on the test split overall and on thin vessels.

    python benchmarks/loss_experiment.py --variant official_lowres --variant full_res --seeds 0,1,2
    python benchmarks/loss_experiment.py --variant 'mine={"sam2_image_size": 512}' --steps 300

Every run is the pipeline's own stages on the data-prep defaults (the synthetic dataset: 30 images of 512 px, split
18 train / 6 val / 6 test):
  1. finetune (DeepSpeed, `--ranks` CPU ranks), convert (the final checkpoint to a Hugging Face folder) and infer (the
     validation and test images, teacher-forced [SEG]), each publishing its artifact under `--prefix`;
  2. vesselseg.evaluate.evaluate scores the prediction set as the pipeline does: threshold = max pooled Dice on the
     validation split, test Dice = mean over test images inside the FOV (the demo table's number);
  3. thin-vessel Dice at the same threshold, pooled over the test images (definition below).
The Frangi baseline (the baseline stage's method and threshold rule) is scored the same way. Nothing is tuned on
test: the script reports the validation Dice that choices are made on beside the test numbers.

Thin-vessel Dice. G = ground-truth vessels, F = FOV, K = skeleton of G (skimage skeletonize), D = Euclidean distance
of each pixel of G to the nearest background pixel. A vessel pixel's radius is D at its nearest skeleton pixel; a
vessel is thin where that radius is ≤ 1 px, i.e. where it is at most 2 px wide (1 px wide: D = 1, 2 px: D = 1,
3 px: D = 2 at the centre). T = thin vessel pixels. The thin zone Z = pixels of F within 2 px of T whose nearest
vessel pixel is in T (so background beside thick vessels is not counted). Thin Dice = 2|P∩T| / (|P∩Z| + |T|) for the
thresholded prediction P, computed from vesselseg.metrics histograms with Z as the field of view.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from vesselseg.baseline import FrangiConfig, frangi_predictions
from vesselseg.data import PreparedDataset
from vesselseg.evaluate import EvaluateConfig, evaluate
from vesselseg.metrics import ProbabilityMap, confusion, image_counts, pool, scores
from vesselseg.predictions import PredictionSet
from vesselseg.stages import convert, data_prep, finetune, infer
from vesselseg.stages.inputs import fetch_dataset
from vesselseg.storage import ObjectStore, fetch_dir

VARIANTS: dict[str, dict] = {
    "official_lowres": {"base_model": "preset:tiny", "model_overrides": {"mask_loss": "official_lowres"}},
    "full_res": {"base_model": "preset:tiny", "model_overrides": {"mask_loss": "full_res"}},
    "tiny-refined": {"base_model": "preset:tiny-refined"},
}
THIN_RADIUS, ZONE_PX = 1.0, 2.0


def thin_zone(truth: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, Z) of the module docstring for one ground-truth mask."""
    if not truth.any():
        return truth.copy(), np.zeros_like(truth)
    depth = ndimage.distance_transform_edt(truth)
    skeleton = skeletonize(truth)
    _, (rows, cols) = ndimage.distance_transform_edt(~skeleton, return_indices=True)
    thin = truth & (depth[rows, cols] <= THIN_RADIUS)
    distance_to_vessel, (vr, vc) = ndimage.distance_transform_edt(~truth, return_indices=True)
    zone = fov & (distance_to_vessel <= ZONE_PX) & thin[vr, vc]
    return thin, zone


def resolution_ceiling(
    dataset: PreparedDataset, sizes: tuple[int, ...] = (64, 128, 256), iterations: int = 300
) -> dict[int, float]:
    """The best validation Dice any r×r logit map can reach after bilinear upsampling to the mask's size.

    For each validation image the logits themselves are optimised (Adam, BCE + Dice against the full-size mask),
    so no model can do better at that resolution; the result is thresholded at 0 and pooled inside the FOV.
    """
    import torch
    import torch.nn.functional as F

    ceilings = {}
    for size in sizes:
        counts = []
        for sample_id in dataset.ids("val"):
            truth = dataset.mask(sample_id)
            target = torch.from_numpy(truth).float()
            logits = torch.zeros(1, 1, size, size, requires_grad=True)
            optimizer = torch.optim.Adam([logits], lr=0.3)
            for _ in range(iterations):
                upsampled = F.interpolate(logits, size=target.shape, mode="bilinear", align_corners=False)[0, 0]
                probability = upsampled.sigmoid()
                loss = F.binary_cross_entropy_with_logits(upsampled, target) + 1 - (
                    2 * (probability * target).sum() + 1) / (probability.sum() + target.sum() + 1)  # fmt: skip
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            binary = ProbabilityMap.from_probability(upsampled.detach().numpy() >= 0, sample_id)
            counts.append(image_counts(binary, truth, dataset.fov(sample_id)))
        ceilings[size] = float(scores(*confusion(pool(counts), 128))["dice"])
        print(json.dumps({"ceiling_logits": size, "val_dice": ceilings[size]}), flush=True)
    return ceilings


def score(dataset: PreparedDataset, predictions: Path, out: Path) -> dict[str, float]:
    prediction_set = PredictionSet(predictions)
    summary = evaluate(dataset, [prediction_set], EvaluateConfig(n_boot=200), out)
    name = prediction_set.info.name
    chosen = summary.thresholds[name]
    thin = []
    for sample_id in dataset.ids("test"):
        truth = dataset.mask(sample_id)
        _, zone = thin_zone(truth, dataset.fov(sample_id))
        thin.append(image_counts(prediction_set.prob(sample_id), truth, zone))
    return {
        "test_dice": summary.metrics[name]["dice"],
        "test_cldice": summary.metrics[name]["cldice"],
        "thin_dice": float(scores(*confusion(pool(thin), chosen.level))["dice"]),
        "val_dice": chosen.selection_dice,
        "threshold": chosen.threshold,
    }


def run_variant(
    name: str,
    overrides: dict,
    seed: int,
    args,
    store: ObjectStore,
    dataset_ref,
    dataset: PreparedDataset,
    scratch: Path,
) -> dict:
    training = {
        "steps": args.steps, "seed": seed, "cpu_processes": args.ranks, "val_every": args.steps,
        "checkpoint_every": args.steps, "log_every": max(1, args.steps // 10), **json.loads(args.base), **overrides,
    }  # fmt: skip
    config = finetune.Config.model_validate(
        {"dataset": dataset_ref.model_dump(), "prefix": f"{args.prefix}/training", "training": training}
    )
    started = time.perf_counter()
    result = finetune.run(config, store)
    wall = time.perf_counter() - started
    converted = convert.run(
        convert.Config(training=result.training, dataset=dataset_ref, prefix=f"{args.prefix}/models"), store
    )
    predicted = infer.run(
        infer.Config(model=converted.model, dataset=dataset_ref, prefix=f"{args.prefix}/predictions"), store
    )
    folder = scratch / f"{name}-{seed}"
    fetch_dir(store, predicted.predictions, folder / "predictions")
    row = {
        "variant": name, "seed": seed, "steps": args.steps, "train_s": result.summary.train_s, "stage_wall_s": wall,
        "final_loss": result.summary.final_loss, **score(dataset, folder / "predictions", folder / "evaluation"),
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict], frangi: dict, ceilings: dict[int, float], args) -> str:
    from machine import describe  # the script's own folder; tests import this module from the repository root

    def mean_sd(values: list[float]) -> str:
        return (
            f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"
        )

    lines = [
        f"Machine: {describe()}. Date: {dt.date.today().isoformat()}. "
        f"torch CPU, DeepSpeed ZeRO-2 fp32, {args.ranks} rank(s).",
        f"Command: `python benchmarks/loss_experiment.py {shlex.join(sys.argv[1:])}`",
        f"Training config: FinetuneConfig defaults, then steps {args.steps}, then `--base`, then each variant's "
        "overrides. Dice values are mean ± standard deviation over seeds.",
        "",
        "| variant | seeds | val Dice (threshold choice) | test Dice | thin-vessel Dice (≤ 2 px) | test clDice "
        "| train s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == name]
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in runs)} | {mean_sd([r['val_dice'] for r in runs])} | "
            f"{mean_sd([r['test_dice'] for r in runs])} | {mean_sd([r['thin_dice'] for r in runs])} | "
            f"{mean_sd([r['test_cldice'] for r in runs])} | {statistics.mean(r['train_s'] for r in runs):.0f} |"
        )
    lines.append(
        f"| Frangi (baseline stage) | – | {frangi['val_dice']:.4f} | {frangi['test_dice']:.4f} | "
        f"{frangi['thin_dice']:.4f} | {frangi['test_cldice']:.4f} | – |"
    )
    if ceilings:
        lines += [
            "",
            "Ceiling of a low-resolution mask (validation Dice of logits optimised directly, then upsampled "
            "bilinearly to 512 px):",
            "",
            "| logits | best possible val Dice |",
            "|---|---|",
        ]
        lines += [f"| {size}×{size} | {dice:.4f} |" for size, dice in ceilings.items()]
    lines += [
        "",
        "Per run:",
        "",
        "| variant | seed | val Dice | test Dice | thin Dice | threshold | final loss | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['val_dice']:.4f} | {r['test_dice']:.4f} | {r['thin_dice']:.4f} | "
            f"{r['threshold']:.3f} | {r['final_loss']:.4f} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant", action="append", help="a name from VARIANTS, or name=<JSON FinetuneConfig overrides>"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--ranks", type=int, default=1, help="CPU ranks per run")
    parser.add_argument("--base", default="{}", help="JSON FinetuneConfig overrides shared by every variant")
    parser.add_argument(
        "--prefix", default="experiments", help="the runs' artifacts go to <prefix>/training, /models, /predictions"
    )
    parser.add_argument("--out", type=Path, help="append the Markdown section to this file too")
    parser.add_argument("--title", default="Fine-tuning variants", help="the section's heading")
    parser.add_argument("--json", type=Path, help="append every run's row here (JSON lines); rows there are reused")
    parser.add_argument("--ceiling", action="store_true", help="also measure the Dice ceiling of low-res logit maps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    variants = {}
    for item in args.variant or list(VARIANTS):
        name, _, raw = item.partition("=")
        variants[name] = json.loads(raw) if raw else VARIANTS[name]
    store = ObjectStore()
    prepared = data_prep.run(data_prep.Config(), store)
    dataset_ref = prepared.dataset
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        scratch = Path(tmp)
        # The test labels too: scoring happens here, never in the training, conversion or inference it runs.
        dataset = fetch_dataset(
            store, dataset_ref, scratch / "dataset", ["val", "test"], ["val", "test"], prepared.test_labels
        )
        frangi_predictions(dataset, ["val", "test"], "val", FrangiConfig(), scratch / "frangi")
        frangi = score(dataset, scratch / "frangi", scratch / "frangi-evaluation")
        print(json.dumps({"variant": "frangi", **frangi}), flush=True)
        ceilings = resolution_ceiling(dataset) if args.ceiling else {}
        # Rows already in --json (an interrupted invocation's) are kept, and their runs not repeated.
        rows = (
            [json.loads(line) for line in args.json.read_text().splitlines()]
            if args.json and args.json.exists()
            else []
        )
        done = {(r["variant"], r["seed"]) for r in rows if r.get("steps") == args.steps}
        for seed in (int(s) for s in args.seeds.split(",")):
            for name, overrides in variants.items():
                if (name, seed) in done:
                    continue
                rows.append(run_variant(name, overrides, seed, args, store, dataset_ref, dataset, scratch))
                if args.json:
                    with open(args.json, "a") as handle:
                        handle.write(json.dumps(rows[-1]) + "\n")
    text = f"## {args.title}\n\n" + markdown(rows, frangi, ceilings, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
